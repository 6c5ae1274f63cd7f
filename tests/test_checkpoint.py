"""`CheckpointMeta`: a model checkpoint's sidecar as a typed record. The JSON is what the training stages have always
written (sidecars written before the record existed load and round-trip unchanged), and a missing or garbled field
is one line naming the sidecar file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detnas.arch import released_archs
from detnas.checkpoint import CheckpointMeta, checkpoint_paths, read_checkpoint, read_checkpoint_meta, save_checkpoint
from detnas.detection.load import load_detection_checkpoint
from detnas.errors import DetnasError
from detnas.pixels import DEFAULT_PIXELS

ARCH = released_archs()["COCO-FPN-300M"]
TENSORS = {"w": torch.arange(6.0).reshape(2, 3)}


def _sidecar(**changes: object) -> dict:
    """A child-det sidecar as `detnas train child-det` writes it (the recipe record abridged)."""
    data = {"kind": "child-det", "space": ARCH.space.to_dict(), "arch": ARCH.to_dict(), "pixels": DEFAULT_PIXELS.to_dict(),
            "classes": ["person", "car"], "num_classes": 2, "detector": "fpn", "label_to_cat_id": {"1": 1, "2": 3},
            "recipe": {"name": "coco-det", "min_size": 320, "max_size": 533, "detector_style": "detnas"}}
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def test_sidecar_round_trips_as_a_record(tmp_path: Path) -> None:
    data = _sidecar()
    meta = CheckpointMeta.from_dict(data, "x.json")
    assert (meta.kind, meta.arch, meta.space, meta.detector) == ("child-det", ARCH, ARCH.space, "fpn")
    assert meta.classes == ("person", "car") and meta.label_to_cat_id == {1: 1, 2: 3} and meta.pixels == DEFAULT_PIXELS
    assert meta.sizes() == (320, 533) and meta.sizes(256, 400) == (256, 400) and meta.detector_style == "detnas"
    assert meta.extra == {"num_classes": 2} and meta.to_dict() == data
    weights = save_checkpoint(tmp_path / "child", TENSORS, meta.to_dict())
    tensors, read = read_checkpoint(weights)
    assert read == read_checkpoint_meta(weights) and torch.equal(tensors["w"], TENSORS["w"])
    on_disk = json.loads(checkpoint_paths(weights)[1].read_text())
    assert read.to_dict() == on_disk and set(on_disk) - set(data) == {"format_version", "digest"}


def test_older_and_classification_sidecars_load() -> None:
    """A supernet-cls sidecar (arch null, no detector, no label map) and one without a recipe, as early runs wrote."""
    cls = _sidecar(kind="supernet-cls", arch=None, detector=..., label_to_cat_id=..., recipe=...)
    meta = CheckpointMeta.from_dict(cls, "cls.json")
    assert (meta.arch, meta.detector, meta.label_to_cat_id, meta.recipe) == (None, None, None, None)
    assert meta.sizes() == (800, 1333) and meta.detector_style == "torchvision" and meta.to_dict() == cls
    child = CheckpointMeta.from_dict(_sidecar(kind="supernet-det", arch=None), "s.json").with_arch("child-det", ARCH)
    assert child.kind == "child-det" and child.arch == ARCH and child.to_dict() == _sidecar()


@pytest.mark.parametrize(("changes", "message"), [
    ({"kind": ...}, "sidecar field 'kind' is missing"),
    ({"space": ...}, "sidecar field 'space' is missing"),
    ({"classes": "person"}, "sidecar field 'classes' is not a list of class names"),
    ({"pixels": {"mean": [0, 0, 0]}}, "sidecar field 'pixels' is not a pixel convention"),
    ({"arch": None}, "sidecar field 'arch' is missing"),  # a child without its arch
    ({"detector": ...}, "sidecar field 'detector' is missing"),  # a detection checkpoint without its kind
    ({"label_to_cat_id": {"1": "car"}}, "sidecar field 'label_to_cat_id' is not a mapping of labels to category ids"),
    ({"recipe": [320, 533]}, "sidecar field 'recipe' is not a mapping of recipe fields"),
    ({"space": {"name": "x"}}, "sidecar field 'space': missing keys"),
    ({"arch": {"space": ARCH.space.name, "choices": "9,9"}}, "sidecar field 'arch'"),
])
def test_bad_field_is_one_line_naming_file_and_field(tmp_path: Path, changes: dict, message: str) -> None:
    weights = save_checkpoint(tmp_path / "bad", TENSORS, _sidecar(**changes))
    for read in (read_checkpoint_meta, read_checkpoint, load_detection_checkpoint):
        with pytest.raises(DetnasError, match=message) as err:
            read(weights)
        assert str(err.value).startswith(f"{tmp_path / 'bad.json'}: ") and "\n" not in str(err.value)
