"""The detnas ONNX metadata has one reader (`detnas.bench.onnx_metadata`): the export's typed `ModelMeta`, the bench's
precision check and `bench latency`'s input size all read through it, and it is the only library code that reads
an ONNX file's metadata_props."""

from __future__ import annotations

import ast
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from detnas.arch import resolve_arch
from detnas.bench.backends.trt_backend import onnx_precision
from detnas.bench.onnx_metadata import FORMAT, OnnxMetadata
from detnas.bench.result import PRECISIONS
from detnas.cli.bench import _onnx_detector_meta
from detnas.errors import DetnasError
from detnas.export.metadata import InputSpec, ModelMeta, PrecisionInfo, class_table
from detnas.export.runtime import read_onnx_meta
from detnas.pixels import DEFAULT_PIXELS

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("detnas", "bench", "export", "search", "workflows")


def _meta() -> ModelMeta:
    return ModelMeta(arch=resolve_arch("COCO-FPN-300M"), detector="fpn", classes=class_table(["cat", "dog"], {1: 17, 2: 18}),
                     input=InputSpec(96, 128), pixels=DEFAULT_PIXELS, thresholds={"score": 0.05, "nms_iou": 0.5},
                     outputs={"boxes": "xyxy pixels"}, versions={"detnas": "test"}, precision=PrecisionInfo("fp32"))


def _onnx_file(path: Path, props: dict[str, str]) -> Path:
    """A one-Identity fp32 graph carrying `props` as metadata."""
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, props)
    onnx.save(model, path)
    return path


def test_every_layer_reads_what_the_export_writes(tmp_path: Path) -> None:
    meta = _meta()
    path = _onnx_file(tmp_path / "det.onnx", meta.to_props())
    read = OnnxMetadata.read(path)
    assert read.is_detector and read.value("format") == FORMAT and read.source == str(path)
    assert read_onnx_meta(path) == meta, "the export's typed record round-trips through the bench reader"
    assert read.stated_precision(PRECISIONS) == "fp32" and onnx_precision(path) == "fp32"
    assert _onnx_detector_meta(path) == {**read.value("input"), "value_range": [0.0, 1.0]}
    assert (_onnx_detector_meta(path)["height"], _onnx_detector_meta(path)["width"]) == (96, 128)


def test_other_onnx_files_and_bad_ones(tmp_path: Path) -> None:
    plain = _onnx_file(tmp_path / "plain.onnx", {"producer_note": "not detnas"})
    assert not OnnxMetadata.read(plain).is_detector and _onnx_detector_meta(plain) is None
    assert OnnxMetadata.read(plain).stated_precision(PRECISIONS) is None
    with pytest.raises(DetnasError, match=r"plain.onnx: no detnas metadata \(detnas.format != detnas-detector/1\)"):
        read_onnx_meta(plain)
    with pytest.raises(DetnasError, match="missing.onnx: ONNX file not found"):
        OnnxMetadata.read(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    for reader in (OnnxMetadata.read, read_onnx_meta, onnx_precision, _onnx_detector_meta):
        with pytest.raises(DetnasError, match="junk.onnx: not a readable ONNX file"):
            reader(tmp_path / "junk.onnx")


def test_corrupted_key_refuses_only_its_readers(tmp_path: Path) -> None:
    props = {**_meta().to_props(), "detnas.thresholds": "{not json"}
    path = _onnx_file(tmp_path / "corrupt.onnx", props)
    assert onnx_precision(path) == "fp32", "the precision check does not read the thresholds"
    for reader in (read_onnx_meta, lambda p: OnnxMetadata.read(p).values()):
        with pytest.raises(DetnasError, match="corrupt.onnx: corrupted detnas metadata"):
            reader(path)
    bare = _onnx_file(tmp_path / "bare.onnx", {"detnas.precision": "int8"})  # unquoted name, as older tools wrote
    assert OnnxMetadata.read(bare).stated_precision(PRECISIONS) == "int8"
    with pytest.raises(DetnasError, match="bare.onnx: metadata detnas.precision says int8 but the graph is fp32"):
        onnx_precision(bare)


def _metadata_reads(tree: ast.AST) -> int:
    """`... in X.metadata_props` loops and comprehensions (writes `del X.metadata_props[:]`, `.add(...)` excluded)."""
    iters = [n.iter for n in ast.walk(tree) if isinstance(n, ast.comprehension | ast.For)]
    return sum(isinstance(i, ast.Attribute) and i.attr == "metadata_props" for i in iters)


def test_one_module_reads_metadata_props() -> None:
    readers = {str(path.relative_to(ROOT)): count for room in LIBRARY for path in sorted((ROOT / room).rglob("*.py"))
               if (count := _metadata_reads(ast.parse(path.read_text())))}
    assert readers == {"bench/onnx_metadata.py": 1}, readers


def test_a_file_with_no_graph_is_not_read_as_a_model(tmp_path: Path) -> None:
    """onnx.load parses 0 bytes as an empty ModelProto: readers then took it for a model without detnas metadata."""
    from detnas.bench.onnx_metadata import load_onnx_header
    from detnas.errors import DetnasError

    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(DetnasError, match=r"empty\.onnx: not an ONNX model \(it holds no graph: 0 bytes\)"):
        load_onnx_header(empty)
