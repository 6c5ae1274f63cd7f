"""Every path ships: a narrow and a wide child of an elastic supernet export to ONNX with parity, and pass the
TensorRT parser lint for 8.6, 10.3 and 11."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detnas.arch import extreme_arch
from detnas.checkpoint import save_checkpoint
from detnas.cli.main import main
from detnas.detection import build_detector
from detnas.detection.elastic import extract_child
from detnas.export.preprocess import letterbox
from detnas.export.runtime import read_onnx_meta
from detnas.images import read_image
from detnas.pixels import DEFAULT_PIXELS, Normalize
from detnas.space import DetectorGenes, SearchSpace, register_space
from detnas.supernet import ChildNet, Supernet

from helpers.data import shared_dataset
from helpers.export import CATEGORY_IDS, CLASSES, SIZE, val_images

ELASTIC = SearchSpace("tiny-elastic-export", 8, (16, 32, 64, 128), (2, 2, 2, 1), 64, width_multipliers=(0.5, 1.0, 1.5),
                      min_depths=(1, 1, 1, 1), detector=DetectorGenes((16, 32), (1, 2), (32, 64), (10, 20), (800,)))

#: the input-size gene at three values (640 / 800 / 960 of the paper's 800 px base)
SIZES = SearchSpace("tiny-elastic-sizes", 8, (16, 32, 64, 128), (2, 2, 2, 1), 64, width_multipliers=(0.5, 1.0),
                    min_depths=(1, 1, 1, 1), detector=DetectorGenes((16, 32), (1, 2), (32, 64), (10, 20), (640, 800, 960)))


@pytest.mark.parametrize("widest", [False, True], ids=["narrowest", "widest"])
def test_child_of_elastic_supernet_exports_with_parity_and_passes_trt_lint(widest, tmp_path, capsys):
    coco_mini = shared_dataset("coco_mini")
    register_space(ELASTIC)
    torch.manual_seed(0)
    supernet = build_detector("fpn", Supernet(ELASTIC), len(CLASSES) + 1, SIZE, SIZE)
    arch = extreme_arch(ELASTIC, (0, 3) * 3 + (1,), widest)
    child = extract_child(supernet, arch).eval()
    assert child.backbone.out_channels == (32 if widest else 16) and child.rpn.post_nms_top_n() == (20 if widest else 10)
    batch = torch.stack([letterbox(read_image(p), SIZE, SIZE, DEFAULT_PIXELS)[0] for p in val_images(coco_mini)])
    for m in child.modules():  # BN statistics of this path on real images (as the search's recalibration does)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        child.train().backbone(Normalize(DEFAULT_PIXELS)(batch))
    meta = {"kind": "child-det", "space": ELASTIC.to_dict(), "arch": arch.to_dict(), "pixels": DEFAULT_PIXELS.to_dict(),
            "classes": CLASSES, "num_classes": len(CLASSES), "detector": "fpn",
            "label_to_cat_id": {str(k): v for k, v in CATEGORY_IDS.items()},
            "recipe": {"name": "test", "min_size": SIZE, "max_size": SIZE}}
    ckpt = save_checkpoint(tmp_path / "child", child.eval().state_dict(), meta)
    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(ckpt), "--out", str(out), "--size", f"{SIZE}x{SIZE}", "--score-thresh",
                 "0.05", "--parity-images", str(coco_mini / "val2017")]) == 0
    assert "parity" in capsys.readouterr().out
    exported = read_onnx_meta(out)
    assert exported.arch == arch and exported.thresholds["rpn_proposals"] == arch.detector.proposals
    assert main(["export", "check", str(out), "--trt", "8.6", "--trt", "10.3", "--trt", "11"]) == 0
    printed = capsys.readouterr().out
    assert all(f"TensorRT {v}" in printed for v in ("8.6", "10.3", "11"))


def test_an_elastic_path_exports_at_its_input_size_by_default():
    """Without --size a child exports at its input-size gene's share of the checkpoint's size, the size its detector
    resizes to (and the search timed and scored it at); a paper arch at the checkpoint's size, as before."""
    from detnas.arch import DetectorPath, released_archs
    from detnas.export.api import default_size

    space = register_space(SIZES)
    for gene, side in ((640, 96), (800, 128), (960, 160)):
        arch = extreme_arch(space, (0,) * space.num_blocks, False)
        arch = type(arch)(space, arch.choices, arch.widths, arch.depths, DetectorPath(16, 1, 32, 10, gene))
        assert default_size(128, arch) == (side, side)
        child = build_detector("fpn", ChildNet(arch), 5, 128, 128)
        assert child.transform.min_size == (side,) and child.transform.max_size >= side
    assert default_size(128, released_archs()["COCO-FPN-300M"]) == default_size(128) == (128, 128)
