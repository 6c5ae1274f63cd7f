"""The one home of each shared concept: image decoding, JSON files, detection sizes, file hashing, test proposals."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from detnas.errors import DetnasError
from detnas.images import read_image
from detnas.io import file_sha256, read_json_file
from detnas.sizes import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE, checkpoint_sizes, max_size_for, parse_hw


def test_read_image_decodes_rgb_and_names_each_failure(tmp_path: Path) -> None:
    Image.new("RGB", (5, 3), (10, 20, 30)).save(tmp_path / "ok.png")
    image = read_image(tmp_path / "ok.png")
    assert image.dtype == torch.uint8 and image.shape == (3, 3, 5) and image[:, 0, 0].tolist() == [10, 20, 30]
    with pytest.raises(DetnasError, match=r"gone\.png: image file missing \(record 7\); restore it"):
        read_image(tmp_path / "gone.png", "record 7", "restore it")
    (tmp_path / "text.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DetnasError, match=r"text\.jpg: cannot read image: .*; pass JPEG or PNG files"):
        read_image(tmp_path / "text.jpg")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[:300])
    with pytest.raises(DetnasError, match=r"cut\.jpg: cannot decode image: (?i:.*truncated)"):
        read_image(tmp_path / "cut.jpg")


def test_read_json_file_one_line_errors_carry_the_fix(tmp_path: Path) -> None:
    (tmp_path / "good.json").write_text('{"a": 1}')
    assert read_json_file(tmp_path / "good.json", "thing") == {"a": 1}
    with pytest.raises(DetnasError, match=r"missing\.json: cannot read latency result \(.*\); rebuild it$"):
        read_json_file(tmp_path / "missing.json", "latency result", "rebuild it")
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(DetnasError, match=r"bad\.json: corrupted sidecar JSON \(malformed JSON at line 1 column 7"):
        read_json_file(tmp_path / "bad.json", "sidecar")


def test_sizes_default_to_the_paper_and_follow_a_checkpoint() -> None:
    assert (DEFAULT_MIN_SIZE, DEFAULT_MAX_SIZE) == (800, 1333) and max_size_for(800) == 1333
    assert max_size_for(320) == 533
    assert checkpoint_sizes({}) == (800, 1333)
    assert checkpoint_sizes({"recipe": {"min_size": 128, "max_size": 213}}) == (128, 213)
    assert checkpoint_sizes({"recipe": {"min_size": 128, "max_size": 213}}, 96, 160) == (96, 160)
    assert parse_hw("320x480") == (320, 480)
    with pytest.raises(DetnasError, match="--size '320x333' must be N or HxW with both sides multiples of 32"):
        parse_hw("320x333", multiple=32)


def test_file_sha256_is_the_content_hash(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(b"detnas" * 1000)
    assert file_sha256(tmp_path / "blob") == hashlib.sha256(b"detnas" * 1000).hexdigest()
    with pytest.raises(DetnasError, match="nothing: cannot read file to hash it"):
        file_sha256(tmp_path / "nothing")


def test_build_detector_takes_test_proposals_for_fpn_only() -> None:
    from detnas.arch import resolve_arch
    from detnas.detection import build_detector
    from detnas.supernet import ChildNet

    arch = resolve_arch("COCO-FPN-300M")
    fpn = build_detector("fpn", ChildNet(arch), 3, 64, 64, proposals=7)
    assert fpn.rpn._post_nms_top_n["testing"] == 7 and fpn.rpn._post_nms_top_n["training"] == 2000
    assert build_detector("fpn", ChildNet(arch), 3, 64, 64).rpn._post_nms_top_n["testing"] == 1000
    retinanet = build_detector("retinanet", ChildNet(resolve_arch("COCO-RetinaNet-300M")), 3, 64, 64, proposals=7)
    assert not hasattr(retinanet, "rpn")
