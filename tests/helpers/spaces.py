"""The one tiny search space the tests share where they need *a* space, not a particular shape.

Four stages (the detectors take C2..C5) of one block each, every op, 8..64 channels: a whole detector on it runs in
a fraction of a second on a CPU. `TINY_SPEC` is its spec as a space file or an arch's `space_spec` holds it.
"""

from __future__ import annotations

import json

from detnas.space import SearchSpace, register_space

TINY_SPEC = {"name": "tiny", "stem_width": 8, "stage_widths": [16, 32, 48, 64], "stage_depths": [1, 1, 1, 1],
             "head_width": 32, "choices": [0, 1, 2, 3]}
TINY = register_space(SearchSpace.from_dict(TINY_SPEC))


def tiny_arch_json(choices: str = "0|3|1|2") -> str:
    """An inline arch on `TINY` that carries its space, so a command resolves it without a space file."""
    return json.dumps({"space": TINY.name, "choices": choices, "space_spec": TINY_SPEC})
