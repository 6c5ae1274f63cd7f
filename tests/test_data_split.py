import json

import pytest

from detnas.cli.main import main
from detnas.data import CocoDetection, split_coco
from detnas.errors import DetnasError


def test_split_is_deterministic_disjoint_and_complete(coco128, tmp_path):
    ann = coco128 / "annotations" / "instances_train2017.json"
    first = split_coco(ann, val_size=32, seed=0, out_dir=tmp_path / "a")
    again = split_coco(ann, val_size=32, seed=0, out_dir=tmp_path / "b")
    other = split_coco(ann, val_size=32, seed=1, out_dir=tmp_path / "c")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    train, val = (json.loads(p.read_text()) for p in first)
    train_ids, val_ids = {im["id"] for im in train["images"]}, {im["id"] for im in val["images"]}
    original = json.loads(ann.read_text())
    assert len(val_ids) == 32 and not train_ids & val_ids
    assert train_ids | val_ids == {im["id"] for im in original["images"]}
    assert len(train["annotations"]) + len(val["annotations"]) == len(original["annotations"])
    assert all(a["image_id"] in val_ids for a in val["annotations"])
    assert train["categories"] == val["categories"] == original["categories"]
    assert {im["id"] for im in json.loads(other[1].read_text())["images"]} != val_ids
    part = CocoDetection(first[1], coco128 / "train2017")  # each part is a usable COCO file
    assert len(part) == 32 and part.classes == CocoDetection(ann, coco128 / "train2017").classes


def test_split_cli_and_bad_sizes(coco_mini, tmp_path, capsys):
    ann = coco_mini / "annotations" / "instances_val2017.json"
    assert main(["data", "split", "--ann", str(ann), "--val-count", "5", "--seed", "3", "--out", str(tmp_path)]) == 0
    assert len(json.loads((tmp_path / "search_val.json").read_text())["images"]) == 5
    assert len(json.loads((tmp_path / "supernet_train.json").read_text())["images"]) == 70
    assert main(["data", "split", "--ann", str(ann), "--val-count", "75", "--out", str(tmp_path / "x")]) == 2
    assert "--val-count 75: must be between 1 and 74" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    with pytest.raises(DetnasError, match="annotation file not found"):
        split_coco(tmp_path / "none.json", 5, 0, tmp_path)
