"""The tiny search spaces the tests share where they need *a* space, not a particular shape.

`TINY`: four stages (the detectors take C2..C5) of one block each, every op, 8..64 channels, so a whole detector on
it runs in a fraction of a second on a CPU. `TINY_ELASTIC`: the same widths at two blocks a stage with every elastic
gene at two or three values (block widths, skippable blocks, FPN width, head convs and FC, proposals, input size).
The `*_SPEC` dicts are the specs as a space file or an arch's `space_spec` holds them.
"""

from __future__ import annotations

import json

from detnas.space import SearchSpace, register_space

TINY_SPEC = {"name": "tiny", "stem_width": 8, "stage_widths": [16, 32, 48, 64], "stage_depths": [1, 1, 1, 1],
             "head_width": 32, "choices": [0, 1, 2, 3]}
TINY = register_space(SearchSpace.from_dict(TINY_SPEC))
TINY_ELASTIC_SPEC = {**TINY_SPEC, "name": "tiny-all-genes", "stage_depths": [2, 2, 2, 2],
                     "width_multipliers": [0.5, 1.0, 1.5], "min_depths": [1, 1, 1, 1],
                     "detector": {"fpn_widths": [16, 32], "head_convs": [1, 2], "head_fc": [32, 64], "proposals": [10, 20],
                                  "input_sizes": [480, 800]}}
TINY_ELASTIC = register_space(SearchSpace.from_dict(TINY_ELASTIC_SPEC))


def tiny_arch_json(choices: str = "0|3|1|2") -> str:
    """An inline arch on `TINY` that carries its space, so a command resolves it without a space file."""
    return json.dumps({"space": TINY.name, "choices": choices, "space_spec": TINY_SPEC})
