import hashlib

import torch

from detnas.cli.main import main
from detnas.data import CocoDetection, image_folder, make_demo_classification, make_demo_detection
from detnas.data.demo import CLASSIFICATION_CLASSES, DETECTION_CLASSES


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_demo_detection_is_deterministic_and_loads_cleanly(tmp_path):
    a = make_demo_detection(tmp_path / "a", num_train=6, num_val=3, seed=0)
    make_demo_detection(tmp_path / "b", num_train=6, num_val=3, seed=0)
    make_demo_detection(tmp_path / "c", num_train=6, num_val=3, seed=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")
    train = CocoDetection(a.train_ann, a.train_images)
    val = CocoDetection(a.val_ann, a.val_images)
    assert len(train) == 6 and len(val) == 3 and train.classes == list(DETECTION_CLASSES)
    assert not train.skipped and not {r.image_id for r in train.records} & {r.image_id for r in val.records}
    for i in range(len(train)):
        image, target = train[i]
        assert 128 <= image.shape[1] <= 160 and 128 <= image.shape[2] <= 160
        assert 1 <= len(target["labels"]) <= 4
        x1, y1, x2, y2 = target["boxes"][0].round().int().tolist()
        inside = image[:, y1 + 2:y2 - 2, x1 + 2:x2 - 2].float()
        # a labelled shape is drawn in its class colour: its dominant channel is the class's (R, G, B)
        if target["labels"][0] == 1:  # square fills its whole box
            assert inside.mean((1, 2)).argmax() == 0


def test_demo_classification_and_cli(tmp_path, capsys):
    root = make_demo_classification(tmp_path / "cls", per_class_train=3, per_class_val=2, size=48)
    train = image_folder(root / "train", size=64, train=True)
    assert train.classes == sorted(CLASSIFICATION_CLASSES) and len(train) == 12
    image, label = train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
    assert main(["data", "demo", "--out", str(tmp_path / "cli"), "--train-count", "2", "--val-count", "1"]) == 0
    assert "--ann" in capsys.readouterr().out
    assert len(CocoDetection(tmp_path / "cli/detection/annotations/instances_train.json",
                             tmp_path / "cli/detection/train")) == 2



def test_a_rerun_removes_what_a_killed_run_was_writing(tmp_path):
    """kill -9 while an image was written leaves `.NAME.detnas-PID-X.tmp` beside it; the rerun into the same folder
    removed none of them (found by bench/suite/bad_input.py's kill points)."""
    dead = 2**22 + 12345  # above Linux's largest pid: no process has it
    stale = [tmp_path / "det" / "train" / f".000001.png.detnas-{dead}-abc.tmp",
             tmp_path / "cls" / "train" / "square" / f".0000.png.detnas-{dead}-abc.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True)
        path.write_bytes(b"half an image")
    make_demo_detection(tmp_path / "det", num_train=1, num_val=1)
    make_demo_classification(tmp_path / "cls", per_class_train=1, per_class_val=1, size=16)
    assert not [p for p in stale if p.exists()]
