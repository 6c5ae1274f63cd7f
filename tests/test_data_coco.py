import json
import warnings

import pytest
import torch
from PIL import Image

from detnas.data import CocoDetection, Resize, collate, detection_transforms
from detnas.data.transforms import RandomHorizontalFlip, scaled_size
from detnas.errors import DetnasError

from helpers.data import coco_ann, coco_set


def test_coco128_loads_with_contiguous_labels_and_crowd_excluded(coco128):
    ann = coco128 / "annotations" / "instances_train2017.json"
    data = json.loads(ann.read_text())
    dataset = CocoDetection(ann, coco128 / "train2017")
    assert len(dataset) == len(data["images"]) == 128 and dataset.num_classes == 80
    assert dataset.classes[0] == "person" and dataset.label_to_cat_id[80] == 90  # ids 1..90 -> labels 1..80
    assert sum(len(r.labels) for r in dataset.records) == sum(1 for a in data["annotations"] if not a["iscrowd"])
    assert dataset.skipped == []
    empty = [i for i, r in enumerate(dataset.records) if len(r.labels) == 0]
    assert empty, "coco128 holds images without annotations"
    image, target = dataset[empty[0]]
    assert target["boxes"].shape == (0, 4) and target["labels"].dtype == torch.int64
    image, target = dataset[0]
    record = dataset.records[0]
    assert image.dtype == torch.uint8 and image.shape == (3, record.height, record.width)
    assert target["boxes"].dtype == torch.float32 and target["image_id"] == record.image_id
    anns = [a for a in data["annotations"] if a["image_id"] == record.image_id and not a["iscrowd"]]
    x, y, w, h = anns[0]["bbox"]
    assert torch.allclose(target["boxes"][0], torch.tensor([x, y, x + w, y + h]))
    assert dataset.label_to_cat_id[int(target["labels"][0])] == anns[0]["category_id"]
    images, targets = collate([dataset[0], dataset[1]])
    assert len(images) == len(targets) == 2 and targets[1]["image_id"] == dataset.records[1].image_id


def test_resize_and_flip_move_boxes_with_the_image():
    assert scaled_size(480, 640, 800, 1333) == (800, 1067)
    assert scaled_size(100, 1000, 800, 1333) == (133, 1333)  # long side caps the scale
    image = torch.zeros(3, 60, 80, dtype=torch.uint8)
    image[:, 10:20, 5:25] = 255
    target = {"boxes": torch.tensor([[5.0, 10.0, 25.0, 20.0]]), "labels": torch.tensor([1]), "image_id": 7}
    resized, t = Resize(120, 400)(image, target)
    assert resized.shape == (3, 120, 160) and torch.allclose(t["boxes"], torch.tensor([[10.0, 20.0, 50.0, 40.0]]))
    flipped, f = RandomHorizontalFlip(p=1.0)(resized, t)
    assert torch.allclose(f["boxes"], torch.tensor([[110.0, 20.0, 150.0, 40.0]]))
    x1, y1, x2, y2 = f["boxes"][0].int().tolist()
    assert flipped[0, y1 + 2:y2 - 2, x1 + 2:x2 - 2].min() > 200 and flipped[0, :, :x1 - 2].max() < 50
    assert RandomHorizontalFlip(p=0.0)(image, target)[1] is target
    out, _ = detection_transforms(train=True, min_size=30, max_size=50)(image, target)
    assert out.shape == (3, 30, 40)


def test_bad_boxes_are_skipped_counted_and_reported_or_refused_when_strict(tmp_path):
    anns = [coco_ann(1, [2, 2, 20, 20]), coco_ann(2, [50, 10, 40, 10]), coco_ann(3, [5, 5, 0, 10], cat=7),
            coco_ann(4, [60, 40, 4.5, 8.5], cat=7)]  # 2: outside the 64 px width; 3: zero area; 4: overhangs 0.5 px
    ann, folder = coco_set(tmp_path, anns)
    with pytest.warns(UserWarning, match="skipped 2 bad boxes"):
        dataset = CocoDetection(ann, folder)
    assert len(dataset.skipped) == 2
    assert "annotation id 2" in dataset.skipped[0] and "outside" in dataset.skipped[0]
    assert "annotation id 3" in dataset.skipped[1] and "zero area" in dataset.skipped[1]
    assert str(ann) in dataset.skip_report()
    target = dataset.target(0)
    assert target["labels"].tolist() == [1, 2]
    assert torch.allclose(target["boxes"][1], torch.tensor([60.0, 40.0, 64.0, 48.0]))  # clipped
    with pytest.raises(DetnasError, match="annotation id 2.*outside"):
        CocoDetection(ann, folder, strict=True)


@pytest.mark.parametrize("case, pattern", [
    ("unknown_category", "annotation id 1 has category_id 5 which is not in 'categories'"),
    ("missing_key", "annotations record id 1 lacks key\\(s\\) bbox"),
    ("missing_image_key", "images record id 1 lacks key\\(s\\) height"),
    ("missing_section", "missing or invalid top-level list 'categories'"),
    ("unknown_image", "refers to image_id 9"),
    ("bad_bbox", "annotation id 1 has bbox"),
    ("duplicate_image", "images ids \\[1\\] occur more than once"),
    ("bad_width", "images record id 1 has width/height '64'/48"),
])
def test_bad_annotation_files_name_the_file_and_record(tmp_path, case, pattern):
    anns = [coco_ann(1, [2, 2, 20, 20])]
    categories, images = None, None
    if case == "unknown_category":
        anns = [coco_ann(1, [2, 2, 20, 20], cat=5)]
    elif case == "missing_key":
        del anns[0]["bbox"]
    elif case == "missing_image_key":
        images = [{"id": 1, "file_name": "1.png", "width": 64}]
    elif case == "unknown_image":
        anns = [coco_ann(1, [2, 2, 20, 20], image_id=9)]
    elif case == "bad_bbox":
        anns = [coco_ann(1, [2, 2, 20])]
    elif case == "duplicate_image":
        images = [{"id": 1, "file_name": "1.png", "width": 64, "height": 48}] * 2
    elif case == "bad_width":
        images = [{"id": 1, "file_name": "1.png", "width": "64", "height": 48}]
    ann, folder = coco_set(tmp_path, anns, categories, images)
    if case == "missing_section":
        data = json.loads(ann.read_text())
        del data["categories"]
        ann.write_text(json.dumps(data))
    with pytest.raises(DetnasError, match=pattern) as info:
        CocoDetection(ann, folder)
    assert str(ann) in str(info.value)


def test_missing_truncated_or_resized_images_are_clear_errors(tmp_path):
    ann, folder = coco_set(tmp_path, [coco_ann(1, [2, 2, 20, 20])], sizes=((64, 48), (64, 48), (64, 48)))
    noise = torch.randint(0, 256, (48, 64, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    Image.fromarray(noise.numpy()).save(folder / "full.jpg", quality=95)
    full = (folder / "full.jpg").read_bytes()
    assert len(full) > 4000
    (folder / "3.png").write_bytes(full[: len(full) // 2])  # truncated JPEG
    Image.new("RGB", (32, 48)).save(folder / "1.png")  # wrong size
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = CocoDetection(ann, folder)
    with pytest.raises(DetnasError, match=r"1\.png: image is 32x48 but .*image id 1 says 64x48"):
        dataset[0]
    with pytest.raises(DetnasError, match=r"3\.png: cannot decode image .*image id 3.*truncated"):
        dataset[2]
    (folder / "2.png").unlink()
    with pytest.raises(DetnasError, match=r"2\.png: image file missing .*image id 2"):
        CocoDetection(ann, folder)
    with pytest.raises(DetnasError, match="annotation file not found"):
        CocoDetection(tmp_path / "nope.json", folder)
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(DetnasError, match="malformed JSON"):
        CocoDetection(tmp_path / "broken.json", folder)


def test_data_check_cli_reports_skips_and_strict_fails(tmp_path, capsys):
    from detnas.cli.main import main

    ann, folder = coco_set(tmp_path, [coco_ann(1, [2, 2, 20, 20]), coco_ann(2, [50, 10, 40, 10])])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the skip report is printed once, not also as a Python warning
        assert main(["data", "check", "--ann", str(ann), "--images", str(folder)]) == 0
    captured = capsys.readouterr()
    assert "1 images decoded, 1 training boxes" in captured.out
    assert (captured.out + captured.err).count("skipped 1 bad boxes") == 1
    assert main(["data", "check", "--ann", str(ann), "--images", str(folder), "--strict"]) == 2
    assert "annotation id 2" in capsys.readouterr().err


def test_data_check_cli_reports_crowd_regions_left_out(tmp_path, capsys):
    from detnas.cli.main import main

    ann, folder = coco_set(tmp_path, [coco_ann(1, [2, 2, 20, 20]), coco_ann(2, [4, 4, 30, 30], iscrowd=1),
                                        coco_ann(3, [10, 10, 20, 20], iscrowd=1)])
    assert main(["data", "check", "--ann", str(ann), "--images", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "1 training boxes" in out and "no boxes skipped" in out
    assert f"{ann}: left out 2 crowd regions (iscrowd 1)" in out, out
    ann, folder = coco_set(tmp_path, [coco_ann(1, [2, 2, 20, 20])])
    assert main(["data", "check", "--ann", str(ann), "--images", str(folder)]) == 0
    assert "no crowd regions" in capsys.readouterr().out
