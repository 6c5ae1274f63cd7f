import pytest
import torch
from PIL import Image

from detnas.data import VocDetection
from detnas.errors import DetnasError
from detnas.evaluation import evaluate

XML = """<annotation><filename>{name}.jpg</filename>{size}{objects}</annotation>"""
SIZE = "<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
OBJ = ("<object><name>{cls}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
       "<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def _voc(tmp_path, entries, image_set=None):
    """entries: name -> (w, h or None for no <size>, [(cls, difficult, x1, y1, x2, y2)])."""
    root = tmp_path / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, (w, h, objects) in entries.items():
        Image.new("RGB", (w, h or w), (90, 90, 90)).save(root / "JPEGImages" / f"{name}.jpg")
        size = SIZE.format(w=w, h=h) if h is not None else ""
        objs = "".join(OBJ.format(cls=c, difficult=d, x1=a, y1=b, x2=x, y2=y) for c, d, a, b, x, y in objects)
        (root / "Annotations" / f"{name}.xml").write_text(XML.format(name=name, size=size, objects=objs))
    if image_set:
        (root / "ImageSets" / "Main" / "val.txt").write_text("\n".join(image_set) + "\n")
    return root


def test_voc_targets_difficult_and_ground_truth_ap(tmp_path):
    root = _voc(tmp_path, {"000001": (80, 60, [("dog", 0, 11, 21, 40, 50), ("person", 1, 1, 1, 20, 20)]),
                           "000002": (64, 64, [("car", 0, 1, 1, 64, 64)]), "000003": (50, 40, [])},
                image_set=["000002", "000001"])
    dataset = VocDetection(root, image_set="val")
    assert len(dataset) == 2 and dataset.num_classes == 20
    image, target = dataset[1]  # 000001, second in the image set
    assert image.shape == (3, 60, 80)
    assert target["labels"].tolist() == [dataset.classes.index("dog") + 1]  # difficult is not a target
    assert torch.allclose(target["boxes"], torch.tensor([[10.0, 20.0, 40.0, 50.0]]))  # 1-based -> 0-based
    assert len(VocDetection(root)) == 3  # no image set: every XML

    position = iter(range(len(dataset)))

    def predict(images):
        out = []
        for _ in images:
            t = dataset.target(next(position))
            out.append({"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))})
        return out

    assert evaluate(predict, dataset)["AP"] == pytest.approx(1.0, abs=1e-12)  # difficult GT is an ignore region, not a miss


@pytest.mark.parametrize("case, pattern", [
    ("no_size", r"000001\.xml: the image has no <size/width>"),
    ("unknown_class", r"000001\.xml: object #0 has class 'unicorn'"),
    ("no_coordinate", r"000001\.xml: object #0 has no <bndbox/xmax>"),
])
def test_bad_voc_files_name_the_file_and_record(tmp_path, case, pattern):
    objects = [("unicorn" if case == "unknown_class" else "dog", 0, 2, 2, 30, 30)]
    root = _voc(tmp_path, {"000001": (40, None if case == "no_size" else 40, objects)})
    if case == "no_coordinate":
        xml = root / "Annotations" / "000001.xml"
        xml.write_text(xml.read_text().replace("<xmax>30</xmax>", ""))
    with pytest.raises(DetnasError, match=pattern):
        VocDetection(root)


def test_voc_bad_boxes_are_counted_and_missing_image_set_is_an_error(tmp_path):
    root = _voc(tmp_path, {"000001": (40, 40, [("dog", 0, 2, 2, 30, 30), ("cat", 0, 10, 10, 90, 30),
                                               ("cat", 0, 5, 5, 4, 20)])})
    with pytest.warns(UserWarning, match="skipped 2 bad boxes"):
        dataset = VocDetection(root)
    assert "object #1 ('cat')" in dataset.skipped[0] and "outside" in dataset.skipped[0]
    assert "object #2 ('cat')" in dataset.skipped[1] and "zero area" in dataset.skipped[1]
    with pytest.raises(DetnasError, match="image set 'test' not found"):
        VocDetection(root, image_set="test")
    with pytest.raises(DetnasError, match="no Annotations/"):
        VocDetection(tmp_path)
