"""The TensorRT-parser lint: each rule fires on a small graph that breaks it and stays silent on the fixed graph;
`detnas export check` and the lint run by `detnas export`, including `--random-init` exports."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from detnas.cli.main import main
from detnas.errors import DetnasError
from detnas.export import trt_lint
from detnas.export.trt_lint import PARSER_VERSIONS, RULES, Rule, lint, parse_version, refuse_if_rejected

F, I64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _value(name, dtype=F, shape=None):
    return helper.make_tensor_value_info(name, dtype, shape)


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _ints(name, values):
    return helper.make_tensor(name, I64, [len(values)], values)


def _findings(model, version):
    """{rule id: [node names]} of one parser version."""
    found: dict[str, list[str]] = {}
    for finding in lint(model, (version,))[0].findings:
        found.setdefault(finding.rule, []).append(finding.node)
    return found


def _slice(axes_constant: bool):
    axes_input = [] if axes_constant else [_value("axes", I64, [1])]
    inits = [_ints("starts", [0]), _ints("ends", [2])] + ([_ints("axes", [1])] if axes_constant else [])
    node = helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"], name="slice")
    return _model([node], [_value("x", F, [1, 8]), *axes_input], [_value("y")], inits)


def _unsqueeze(axes_constant: bool):
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="unsqueeze")]
    inputs = [_value("x", F, [4])]
    if axes_constant:
        nodes.insert(0, helper.make_node("Constant", [], ["axes"], value=_ints("v", [0])))
    else:
        inputs.append(_value("axes", I64, [1]))
    return _model(nodes, inputs, [_value("y")])


def _squeeze_all(static: bool):
    node = helper.make_node("Squeeze", ["x"], ["y"], name="squeeze")
    return _model([node], [_value("x", F, [1, 3] if static else ["n", 1])], [_value("y")])


def _reduce(axes_constant: bool):
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="reduce")
    inputs = [_value("x", F, [2, 3])] + ([] if axes_constant else [_value("axes", I64, [1])])
    return _model([node], inputs, [_value("y")], [_ints("axes", [1])] if axes_constant else [])


def _topk(k: int | None, sorted_: int = 1):
    node = helper.make_node("TopK", ["x", "k"], ["values", "indices"], name="topk", sorted=sorted_)
    inputs = [_value("x", F, [1, 8000])] + ([_value("k", I64, [1])] if k is None else [])
    return _model([node], inputs, [_value("values"), _value("indices", I64)], [] if k is None else [_ints("k", [k])])


def _nms(with_threshold: bool, classes: int = 1, boxes: int = 100):
    names = ["boxes", "scores", "max_out", "iou"] + (["score_min"] if with_threshold else [])
    inits = [_ints("max_out", [100]), helper.make_tensor("iou", F, [1], [0.5]),
             helper.make_tensor("score_min", F, [1], [0.05])]
    node = helper.make_node("NonMaxSuppression", names, ["selected"], name="nms")
    return _model([node], [_value("boxes", F, [1, boxes, 4]), _value("scores", F, [1, classes, boxes])],
                  [_value("selected", I64)], inits[:len(names) - 2])


def _if(then_shape: list[int], else_shape: list | None, constant_condition: bool = False):
    """An If whose then branch is a constant of `then_shape` and whose else branch returns the outer x."""
    then_out = helper.make_tensor("t", F, then_shape, [0.0] * _size(then_shape))
    then_branch = helper.make_graph([helper.make_node("Constant", [], ["then_y"], value=then_out)], "then", [],
                                    [_value("then_y", F, then_shape)])
    else_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["else_y"])], "else", [],
                                    [_value("else_y", F, None)])
    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch)
    inputs = [_value("x", F, else_shape)] + ([] if constant_condition else [_value("cond", BOOL, [])])
    inits = [helper.make_tensor("cond", BOOL, [], [True])] if constant_condition else []
    return _model([node], inputs, [_value("y")], inits)


def _size(shape):
    total = 1
    for d in shape:
        total *= d
    return total


def _loop(constant_trip: bool):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["i"], ["scan"])],
        "body", [_value("i", I64, []), _value("cond_in", BOOL, [])],
        [_value("cond_out", BOOL, []), _value("scan", I64, [])])
    node = helper.make_node("Loop", ["trips", "cond"], ["stacked"], name="loop", body=body)
    inits = [helper.make_tensor("cond", BOOL, [], [True])] + ([helper.make_tensor("trips", I64, [], [4])]
                                                               if constant_trip else [])
    inputs = [] if constant_trip else [_value("trips", I64, [])]
    return _model([node], inputs, [_value("stacked", I64)], inits)


def _dequantize(dtype: int):
    """A weight dequantized from `dtype` (INT32: the bias ONNX Runtime's QuantizeBias writes; FLOAT8E4M3FN: FP8)."""
    weight = helper.make_tensor("w_q", dtype, [4], [0, 1, 2, 3])
    scale = helper.make_tensor("w_scale", F, [], [0.1])
    node = helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], name="dq")
    return _model([node], [], [_value("w", F, [4])], [weight, scale])


def _quantize(dtype: int, to: int = TensorProto.INT8):
    """x (of `dtype`) quantized to `to` (the zero point's type) and back."""
    zero = helper.make_tensor("zero", to, [], [0])
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["x_q"], name="q"),
             helper.make_node("DequantizeLinear", ["x_q", "scale", "zero"], ["y"], name="dq")]
    scale = helper.make_tensor("scale", dtype, [], [0.1])
    return _model(nodes, [_value("x", dtype, [4])], [_value("y", dtype, [4])], [scale, zero], opset=21)


def _unsupported(op: str):
    return _model([helper.make_node(op, ["x"], ["y"], name="op")], [_value("x", F, [2, 3])], [_value("y")])


# (rule id, broken graph, fixed graph, versions where the broken graph must fire, versions where it must not)
CASES = {
    "slice-axes": (lambda: _slice(False), lambda: _slice(True), ("8.6", "10.0"), ("10.3", "11")),
    "squeeze-axes": (lambda: _unsqueeze(False), lambda: _unsqueeze(True), ("8.6", "10.0", "10.3"), ("11",)),
    "squeeze-dynamic-all": (lambda: _squeeze_all(False), lambda: _squeeze_all(True), PARSER_VERSIONS, ()),
    "reduce-axes": (lambda: _reduce(False), lambda: _reduce(True), PARSER_VERSIONS, ()),
    "topk-k": (lambda: _topk(None), lambda: _topk(1000), PARSER_VERSIONS, ()),
    "topk-sorted": (lambda: _topk(100, sorted_=0), lambda: _topk(100), ("11",), ("8.6", "10.3")),
    "nms-score-threshold": (lambda: _nms(False), lambda: _nms(True), PARSER_VERSIONS, ()),
    "nms-box-limit": (lambda: _nms(True, classes=2, boxes=3000), lambda: _nms(True, classes=1, boxes=3000),
                      PARSER_VERSIONS, ()),
    "if-branch-shapes": (lambda: _if([0], ["n"]), lambda: _if([2], [2]), ("8.6",), ("10.0", "11")),
    "if-branch-rank": (lambda: _if([2], [2, 1]), lambda: _if([2, 1], ["n", 1]), ("10.0", "11"), ()),
    "loop-dynamic-scan": (lambda: _loop(False), lambda: _loop(True), PARSER_VERSIONS, ()),
    "dequantize-type": (lambda: _dequantize(TensorProto.INT32), lambda: _dequantize(TensorProto.INT8), PARSER_VERSIONS,
                        ()),
    "quantize-type": (lambda: _quantize(F, TensorProto.UINT8), lambda: _quantize(F), PARSER_VERSIONS, ()),
    "unsupported-op": (lambda: _unsupported("Hardmax"), lambda: _unsupported("Softmax"), ("8.6",), ("10.0", "11")),
}


def test_every_rule_has_a_case_and_names_its_source():
    assert {r.id for r in RULES} == set(CASES)
    assert all("onnx-tensorrt" in r.source or "TensorRT" in r.source for r in RULES)


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires_on_broken_graph_only(rule_id):
    broken, fixed, fires, silent = CASES[rule_id]
    for version in fires:
        assert rule_id in _findings(broken(), version), (rule_id, version)
        assert rule_id not in _findings(fixed(), version), (rule_id, version, "fixed graph")
    for version in silent:
        assert rule_id not in _findings(broken(), version), (rule_id, version, "rule does not apply here")


def test_qdq_types_follow_each_parser_version():
    """FP8 weights and BF16 activations are quantized types from 10.0 on, not on 8.6; INT32 (a quantized bias) on none."""
    fp8, bf16 = _dequantize(TensorProto.FLOAT8E4M3FN), _quantize(TensorProto.BFLOAT16)
    assert "dequantize-type" in _findings(fp8, "8.6") and "quantize-type" in _findings(bf16, "8.6")
    for version in ("10.0", "10.3", "11"):
        assert _findings(fp8, version) == {} and _findings(bf16, version) == {}, version
    finding = lint(_dequantize(TensorProto.INT32), ("11",))[0].findings[0]
    assert finding.detail == "input 'w_q' is INT32" and "QuantizeBias" in finding.text


def test_if_with_constant_condition_imports_one_branch():
    """8.6-GA importIf parses only the selected branch of a constant condition: no conditional, no size rule."""
    assert "if-branch-shapes" not in _findings(_if([0], ["n"], constant_condition=True), "8.6")


def test_unsupported_everywhere_and_topk_limit():
    assert all("unsupported-op" in _findings(_unsupported("Unique"), v) for v in PARSER_VERSIONS)
    assert "topk-k" in _findings(_topk(5000), "11"), "K above 3840"


def test_nodes_in_subgraphs_are_walked_with_outer_constants():
    """A Slice with tensor axes inside an If branch is found; a Slice reading an outer initializer is not."""
    def branch(name, axes):
        node = helper.make_node("Slice", ["x", "starts", "ends", axes], [f"{name}_y"], name=f"{name}_slice")
        return helper.make_graph([node], name, [], [_value(f"{name}_y", F, None)])

    node = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch("then", "const_axes"),
                            else_branch=branch("else", "axes"))
    model = _model([node], [_value("x", F, [1, 8]), _value("cond", BOOL, []), _value("axes", I64, [1])],
                   [_value("y")], [_ints("starts", [0]), _ints("ends", [2]), _ints("const_axes", [1])])
    report = lint(model, ("10.0",))[0]
    assert (report.nodes, report.subgraph_nodes) == (3, 2)
    slices = [f for f in report.findings if f.rule == "slice-axes"]
    assert [(f.node, f.graph) for f in slices] == [("else_slice", "main/if.else_branch")]


def test_initializer_listed_as_input_stays_constant():
    """Models of IR < 4 list initializers among the graph inputs; the parser still imports them as weights."""
    model = _slice(True)
    model.graph.input.append(_value("axes", I64, [1]))
    assert "slice-axes" not in _findings(model, "8.6")


def test_cli_check_exits_2_with_one_line_per_finding(tmp_path, capsys):
    import onnx

    broken, clean = tmp_path / "broken.onnx", tmp_path / "clean.onnx"
    onnx.save(_slice(False), str(broken))
    onnx.save(_slice(True), str(clean))
    assert main(["export", "check", str(broken), "--trt", "10.0"]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "TensorRT 10.0: 1 findings in 1 nodes checked (0 in subgraphs)"
    assert out[1].strip().startswith("node slice (Slice): Slice with tensor axes") and len(out) == 2
    assert main(["export", "check", str(broken), "--trt", "10.3"]) == 0
    assert main(["export", "check", str(clean)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-4:] == [f"TensorRT {v}: passed: 1 nodes checked (0 in subgraphs)" for v in PARSER_VERSIONS]


def test_bad_input_is_one_line(tmp_path, capsys):
    garbage = tmp_path / "x.onnx"
    garbage.write_bytes(b"not a model")
    for argv in (["export", "check", str(tmp_path / "missing.onnx")], ["export", "check", str(garbage)],
                 ["export", "check", str(garbage), "--trt", "7.1"]):
        assert main(argv) == 2, argv
        err = " ".join(capsys.readouterr().err.split())
        assert err.startswith("error:") and "Traceback" not in err, err
    with pytest.raises(DetnasError, match=r"--trt 7.1: the lint knows TensorRT 8.6 and newer"):
        parse_version("7.1")
    with pytest.raises(DetnasError, match=r"installed TensorRT 8.5.3: the lint knows TensorRT 8.6"):
        refuse_if_rejected(garbage, "8.5.3")
    assert parse_version("10.13.0.35") == (10, 13)


def test_trt_build_is_refused_before_building(tmp_path):
    """What `detnas export --format trt` runs after writing the ONNX file: one line with node, op and rule."""
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(_slice(False), str(path))
    with pytest.raises(DetnasError) as caught:
        refuse_if_rejected(path, "10.2.0")
    message = str(caught.value)
    assert "\n" not in message and "TensorRT 10.2.0 parser would reject" in message
    assert "node slice (Slice): Slice with tensor axes" in message
    assert refuse_if_rejected(path, "10.3").passed


@pytest.fixture(scope="module")
def random_init_exports(module_tmp):
    """`detnas export --random-init` of both detectors at 64 px on a tiny arch (inline JSON with its space), as
    the CLI runs it: ONNX written, pre-NMS parity checked, lint notes printed. {kind: (path, stdout)}"""
    import contextlib
    import io
    import json

    from detnas.arch import sample_arch

    from helpers.export import TINY

    arch = json.dumps(sample_arch(TINY, 0).to_dict())
    root = module_tmp("random_init")
    exports = {}
    for kind in ("fpn", "retinanet"):
        path, printed = root / f"{kind}.onnx", io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = main(["export", "--arch", arch, "--random-init", "--detector", kind, "--num-classes", "3",
                         "--size", "64", "--proposals", "50", "--no-simplify", "--out", str(path)])
        assert code == 0, kind
        exports[kind] = (path, printed.getvalue())
    return exports


@pytest.mark.slow
def test_random_init_exports_run_with_pre_nms_parity(random_init_exports):
    from detnas.export.runtime import read_onnx_meta

    heads = {"fpn": "RPN objectness: ", "retinanet": "class logits: "}
    for kind, (path, printed) in random_init_exports.items():
        meta = read_onnx_meta(path)
        assert meta.detector == kind and meta.input.shape() == (1, 3, 64, 64)
        assert [c.name for c in meta.classes] == ["class1", "class2", "class3"]
        assert "parity OK:" in printed and "before NMS: " in printed and heads[kind] in printed, printed
        assert "note: TensorRT 10.3 parser lint" in printed and "note: TensorRT 11 parser lint" in printed


def test_random_init_bad_options_are_one_line(tmp_path, capsys):
    bad = {"no arch": ["export", "--random-init", "--out", str(tmp_path / "a.onnx")],
           "weights too": ["export", "--random-init", "--arch", "COCO-FPN-300M", "--weights", str(tmp_path / "w"),
                           "--out", str(tmp_path / "b.onnx")],
           "detector": ["export", "--random-init", "--arch", "COCO-FPN-300M", "--detector", "yolo",
                        "--out", str(tmp_path / "c.onnx")],
           "classes": ["export", "--random-init", "--arch", "COCO-FPN-300M", "--num-classes", "0",
                       "--out", str(tmp_path / "e.onnx")],
           "no weights": ["export", "--out", str(tmp_path / "d.onnx"), "--no-parity"]}
    for name, argv in bad.items():
        assert main(argv) == 2, name
        err = " ".join(capsys.readouterr().err.split())
        assert err.startswith("error:") and "Traceback" not in err, (name, err)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_trt_export_refuses_before_building(tmp_path, monkeypatch, capsys):
    """`detnas export --format trt` with TensorRT 10.0 installed: the written graph is linted for 10.0 and refused
    in one line (node, op, rule) before any engine is built."""
    import json

    import detnas.bench.backends.trt_backend as trt_backend
    import detnas.export.trt as trt_export
    from detnas.arch import sample_arch

    from helpers.export import TINY

    class FakeTensorRT:
        __version__ = "10.0.1.6"

    def no_build(*args, **kwargs):
        raise AssertionError("an engine build was started for a graph the parser rejects")

    monkeypatch.setattr(trt_backend, "require_tensorrt", lambda: FakeTensorRT)
    monkeypatch.setattr(trt_export, "export_trt", no_build)
    # a rule every graph breaks, so the refusal is tested whatever the detector graph passes
    conv_rule = Rule("test-conv", frozenset({"Conv"}), "every Conv is rejected in this test", "the test",
                     lambda facts: "", since=(10, 0))
    monkeypatch.setattr(trt_lint, "RULES", [*trt_lint.RULES, conv_rule])
    out = tmp_path / "m.onnx"
    code = main(["export", "--arch", json.dumps(sample_arch(TINY, 0).to_dict()), "--random-init", "--size", "64",
                 "--proposals", "20", "--no-simplify", "--no-parity", "--format", "trt", "--out", str(out)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
    assert "the TensorRT 10.0.1.6 parser would reject this graph: node " in err, err
    assert "(Conv): every Conv is rejected in this test" in err and "see detnas export check" in err, err
    assert out.exists(), "the ONNX file is kept (ONNX Runtime runs it); only the engine build is refused"


@pytest.mark.slow
def test_real_exports_pass_check_for_every_version(random_init_exports):
    for kind, (path, _) in random_init_exports.items():
        assert main(["export", "check", str(path)]) == 0, kind


@pytest.mark.slow  # two detectors exported at different proposals: 50 s on 2 loaded cores
def test_an_engine_is_not_judged_against_another_detector(tmp_path):
    """`export_trt` with a reference exported at other RPN proposals is refused in one line naming the field,
    before TensorRT is asked for (their detections differ by design, so parity would be a false alarm or pass)."""
    import json

    from detnas.arch import sample_arch
    from detnas.export.trt import export_trt

    from helpers.export import TINY

    files = {}
    for proposals in (20, 10):
        files[proposals] = tmp_path / f"p{proposals}.onnx"
        assert main(["export", "--arch", json.dumps(sample_arch(TINY, 0).to_dict()), "--random-init", "--size", "64",
                     "--proposals", str(proposals), "--no-simplify", "--no-parity", "--out", str(files[proposals])]) == 0
    with pytest.raises(DetnasError, match="differs from .* in its metadata field 'thresholds'"):
        export_trt(files[20], tmp_path / "m.engine", parity_images=[files[20]], reference=files[10])
    assert not (tmp_path / "m.engine").exists()
