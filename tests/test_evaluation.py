import json

import pytest
import torch

from detnas.data import CocoDetection
from detnas.errors import DetnasError
from detnas.evaluation import METRICS, evaluate


def _coco_mini_val(root):
    return CocoDetection(root / "annotations" / "instances_val2017.json", root / "val2017")


def _ground_truth_predictor(dataset, score=1.0, shift=0.0):
    """Returns the dataset's own converted targets (xyxy, contiguous labels) as detections, in call order."""
    position = iter(range(len(dataset)))

    def predict(images):
        out = []
        for image in images:
            target = dataset.target(next(position))
            assert image.dtype == torch.uint8 and image.shape[0] == 3
            out.append({"boxes": target["boxes"] + shift, "labels": target["labels"],
                        "scores": torch.full((len(target["labels"]),), score)})
        return out

    return predict


def test_ground_truth_through_our_path_gives_ap_one(coco_mini, tmp_path):
    dataset = _coco_mini_val(coco_mini)
    out = tmp_path / "dets.json"
    metrics = evaluate(_ground_truth_predictor(dataset), dataset, out_json=out, batch_size=16)
    assert metrics["AP"] == 1.0 and metrics["AP50"] == 1.0 and metrics["AP75"] == 1.0
    assert metrics["AR100"] == 1.0 and metrics["images"] == len(dataset)
    results = json.loads(out.read_text())
    official = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    non_crowd = [a for a in official["annotations"] if not a["iscrowd"]]
    assert len(results) == len(non_crowd) == metrics["detections"]
    assert {r["category_id"] for r in results} == {a["category_id"] for a in non_crowd}  # ids mapped back
    first = min(non_crowd, key=lambda a: (a["image_id"], a["id"]))
    match = [r for r in results if r["image_id"] == first["image_id"] and r["category_id"] == first["category_id"]]
    assert any(all(abs(p - q) < 1e-2 for p, q in zip(r["bbox"], first["bbox"])) for r in match)


def test_shifted_boxes_lower_ap_and_subset_evaluation(coco_mini):
    dataset = _coco_mini_val(coco_mini)
    shifted = evaluate(_ground_truth_predictor(dataset, shift=8.0), dataset)
    assert 0.0 < shifted["AP"] < 1.0 and shifted["AP50"] > shifted["AP75"]
    subset = evaluate(_ground_truth_predictor(dataset), dataset, max_images=10)
    assert subset["images"] == 10 and subset["AP"] == 1.0  # only the evaluated images count


def test_empty_detections_give_zero(coco_mini, tmp_path):
    dataset = _coco_mini_val(coco_mini)

    def nothing(images):
        return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
                for _ in images]

    metrics = evaluate(nothing, dataset, out_json=tmp_path / "empty.json", max_images=4)
    assert all(metrics[name] == 0.0 for name in METRICS)
    assert json.loads((tmp_path / "empty.json").read_text()) == []


def test_bad_predictions_are_refused(coco_mini):
    dataset = _coco_mini_val(coco_mini)
    with pytest.raises(DetnasError, match="label 0"):
        evaluate(lambda ims: [{"boxes": torch.zeros(1, 4), "scores": torch.ones(1),
                               "labels": torch.zeros(1, dtype=torch.int64)} for _ in ims], dataset, max_images=2)
    with pytest.raises(DetnasError, match="results for"):
        evaluate(lambda ims: [], dataset, max_images=2)


def _det_checkpoint(tmp_path, kind, classes):
    from detnas.arch import resolve_arch
    from detnas.checkpoint import save_checkpoint
    from detnas.detection import build_detector
    from detnas.pixels import DEFAULT_PIXELS
    from detnas.supernet import ChildNet

    arch = resolve_arch("COCO-FPN-300M")
    torch.manual_seed(1)
    detector = build_detector(kind, ChildNet(arch), len(classes) + 1, 128, 213)
    meta = {"kind": "child-det", "space": arch.space.to_dict(), "arch": arch.to_dict(), "detector": kind,
            "pixels": DEFAULT_PIXELS.to_dict(), "classes": classes, "num_classes": len(classes),
            "recipe": {"min_size": 128, "max_size": 213}}
    save_checkpoint(tmp_path / "det", detector.state_dict(), meta)
    return detector, tmp_path / "det.safetensors"


def test_load_detector_restores_the_same_outputs(tmp_path):
    from detnas.arch import resolve_arch
    from detnas.detection import load_detector

    detector, path = _det_checkpoint(tmp_path, "retinanet", ["a", "b"])
    loaded, meta = load_detector(path)
    assert loaded.transform.min_size == (128,) and loaded.transform.max_size == 213  # the recipe's sizes
    x = [torch.rand(3, 100, 140)]
    detector.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(detector.backbone(x[0][None]).popitem()[1], loaded.backbone(x[0][None]).popitem()[1])
    assert meta.classes == ("a", "b") and meta.detector == "retinanet"
    with pytest.raises(DetnasError, match="checkpoint holds arch"):
        load_detector(path, arch=resolve_arch("COCO-RetinaNet-300M"))


@pytest.mark.slow
def test_eval_cli_random_init_and_checkpoint_on_coco_mini(coco_mini, tmp_path, capsys):
    from detnas.cli.main import main

    ann, images = coco_mini / "annotations" / "instances_val2017.json", coco_mini / "val2017"
    common = ["eval", "--ann", str(ann), "--images", str(images), "--min-size", "128", "--max-images", "2"]
    out = tmp_path / "dets.json"
    assert main([*common, "--arch", "COCO-FPN-300M", "--random-init", "--proposals", "50",
                 "--out-json", str(out), "--json", str(tmp_path / "eval.json")]) == 0
    text = capsys.readouterr().out
    assert "random-init fpn" in text and "AP50" in text and "AR100" in text and "(2 images, short side 128" in text
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["schema"] == "detnas.eval/1" and report["images"] == 2 and report["detections_json"] == str(out)
    assert report["model"] == "random-init fpn" and f"{report['detections']} detections" in text
    assert isinstance(json.loads(out.read_text()), list)
    classes = CocoDetection(ann, images).classes
    _, ckpt = _det_checkpoint(tmp_path, "retinanet", classes)
    assert main([*common, "--weights", str(ckpt)]) == 0
    assert f"{ckpt} (pytorch cpu) on" in capsys.readouterr().out
    _, wrong = _det_checkpoint(tmp_path / "w", "retinanet", classes[:3])
    assert main([*common, "--weights", str(wrong)]) == 2
    assert "classes differ" in capsys.readouterr().err
    assert main([*common, "--weights", str(ckpt), "--random-init"]) == 2
    assert "exactly one of" in capsys.readouterr().err
