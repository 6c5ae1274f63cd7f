"""A TensorRT-ONNX-parser lint: which nodes of an ONNX graph (subgraphs of If / Loop / Scan included) a given
TensorRT parser version rejects, or turns into an engine that differs from ONNX Runtime.

Every rule is a small registered record (`Rule`) holding one pattern and a fact from onnx-tensorrt or TensorRT's
own documentation, with the place the fact comes from. The sources read (onnx/onnx-tensorrt):

- 8.6: branch release/8.6-GA, commit 6ba67d3, builtin_op_importers.cpp and docs/operators.md;
- 10.0: branch release/10.0-GA, commit 1b4dafe, onnxOpImporters.cpp, importerUtils.cpp, docs/operators.md;
- 10.1: branch 10.1-GA, commit 96e7811, docs/operators.md (the first to state the Loop and If-rank limits);
- newest: docs/Changelog.md and docs/operators.md of the 10.15 GA release (2026-02-02), the newest stored; no
  11.x onnx-tensorrt source was available, so version 11 is linted with the 10.15 facts.

Versions are compared as (major, minor); a rule with `before` applies to parsers older than that version, one with
`since` to that version and newer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detnas.errors import DetnasError

PARSER_VERSIONS = ("8.6", "10.0", "10.3", "11")
OLDEST = (8, 6)
TOPK_MAX_K = 3840
NMS_MAX_BOXES = 5000
SMALL_CONSTANT = 64  # elements: initializers up to this size have their values read (axes, K)
REDUCE_OPS = frozenset({"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare"})

Version = tuple[int, int]
Shape = tuple[int | None, ...]  # None: a dimension the static shapes leave open


def parse_version(text: str, what: str = "--trt") -> Version:
    """'8.6', '10.3', '11', '10.13.0.35' -> (major, minor); older than 8.6 or malformed is a one-line error that
    names `what` (the option, or the installed TensorRT)."""
    match = re.fullmatch(r"(\d+)(?:\.(\d+))?(?:\.\d+)*", text.strip())
    if not match:
        raise DetnasError(f"{what} {text}: give a TensorRT version such as {', '.join(PARSER_VERSIONS)}")
    version = (int(match.group(1)), int(match.group(2) or 0))
    if version < OLDEST:
        raise DetnasError(f"{what} {text}: the lint knows TensorRT 8.6 and newer (versions {', '.join(PARSER_VERSIONS)}"
                          " and later); use TensorRT 8.6 or newer")
    return version


@dataclass(frozen=True)
class NodeFacts:
    """One node with what the rules may ask about it: constants visible in its scope and static shapes."""

    node: Any  # onnx.NodeProto
    name: str
    graph: str  # "main" or the path of the subgraph, e.g. "main/If_3.else_branch"
    constants: dict[str, np.ndarray | None]  # initializers and Constant outputs in scope (None: value not loaded)
    shapes: dict[str, Shape]
    types: dict[str, int] = field(default_factory=dict)  # element types (onnx.TensorProto enum) known statically

    @property
    def in_subgraph(self) -> bool:
        return self.graph != "main"

    def input(self, index: int) -> str:
        """The name of input `index`, '' where it is absent or left empty (an omitted optional input)."""
        return self.node.input[index] if index < len(self.node.input) else ""

    def is_constant(self, name: str) -> bool:
        return name in self.constants

    def value(self, name: str) -> np.ndarray | None:
        return self.constants.get(name)

    def attribute(self, name: str) -> Any:
        from onnx import helper

        for attr in self.node.attribute:
            if attr.name == name:
                return helper.get_attribute_value(attr)
        return None


@dataclass(frozen=True)
class Rule:
    """One fact: nodes of `ops` for which `breaks` returns a reason are rejected (or mistranslated) by the parsers
    in [since, before). `text` is the rule in plain words with its fix; `source` says where the fact comes from."""

    id: str
    ops: frozenset[str]
    text: str
    source: str
    breaks: Callable[[NodeFacts], str | None]
    since: Version | None = None
    before: Version | None = None

    def applies(self, version: Version) -> bool:
        return (self.since is None or version >= self.since) and (self.before is None or version < self.before)


@dataclass(frozen=True)
class Finding:
    node: str
    op: str
    graph: str
    rule: str
    text: str
    source: str
    detail: str

    def line(self) -> str:
        """The one-line form the CLI prints: node, op and rule."""
        return f"node {self.node} ({self.op}): {self.text}{f' [{self.detail}]' if self.detail else ''}"


@dataclass
class LintReport:
    """The findings of one parser version over every node of a model."""

    version: str
    nodes: int
    subgraph_nodes: int
    findings: list[Finding] = field(default_factory=list)
    note: str = ""  # which facts stood in, for a version newer than any the rules were written from

    @property
    def passed(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        checked = f"{self.nodes} nodes checked ({self.subgraph_nodes} in subgraphs)"
        verdict = f"passed: {checked}" if self.passed else f"{len(self.findings)} findings in {checked}"
        return verdict + (f" ({self.note})" if self.note else "")


RULES: list[Rule] = []


def rule(id: str, ops: set[str] | frozenset[str], text: str, source: str, *, since: str | None = None,
         before: str | None = None) -> Callable[[Callable[[NodeFacts], str | None]], Callable[[NodeFacts], str | None]]:
    """Register the decorated pattern as a `Rule`."""

    def register(breaks: Callable[[NodeFacts], str | None]) -> Callable[[NodeFacts], str | None]:
        RULES.append(Rule(id, frozenset(ops), text, source, breaks, since and parse_version(since),
                          before and parse_version(before)))
        return breaks

    return register


# --- operators no parser of a version has an importer for -------------------------------------------------------
# From operators.md ("N" rows) at release/8.6-GA 6ba67d3, release/10.0-GA 1b4dafe and the 10.15 release; `since`
# is the Changelog entry that added the op. The detector graphs' own data-dependent ops are all supported by every
# version linted here: NonZero, RoiAlign and native NonMaxSuppression since 8.5 GA (Changelog 8.5 GA).
UNSUPPORTED_OPS: dict[str, str | None] = {
    **dict.fromkeys(("BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Col2Im", "Compress",
                     "ConcatFromSequence", "ConvInteger", "DFT", "Det", "DynamicQuantizeLinear", "ImageDecoder",
                     "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
                     "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement",
                     "QLinearConv", "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct",
                     "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap",
                     "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringNormalizer", "TfIdfVectorizer", "Unique")),
    "Hardmax": "9.2",  # Changelog 9.2 GA
    "DeformConv": "10.1",  # Changelog 10.1 GA
    "BlackmanWindow": "10.4", "HammingWindow": "10.4", "HannWindow": "10.4",  # Changelog 10.4 GA
    "STFT": "10.5",  # Changelog 10.5 GA
    "Attention": "10.14",  # Changelog 10.14 GA
    "RMSNormalization": "10.15", "RotaryEmbedding": "10.15", "TensorScatter": "10.15",  # Changelog 10.15 GA
}

for _op, _since in UNSUPPORTED_OPS.items():
    rule("unsupported-op", {_op}, f"{_op} has no importer in this TensorRT parser"
         + (f" (supported from {_since} on)" if _since else "") + "; rewrite the graph without it",
         "onnx-tensorrt docs/operators.md (release/8.6-GA, release/10.0-GA, 10.15 GA)"
         + (f", docs/Changelog.md {_since} GA" if _since else ""), before=_since)(lambda facts: "")


# --- control flow ----------------------------------------------------------------------------------------------
def _branch_shapes(facts: NodeFacts) -> list[tuple[Shape | None, Shape | None]]:
    then, other = facts.attribute("then_branch"), facts.attribute("else_branch")
    return [(facts.shapes.get(a.name), facts.shapes.get(b.name)) for a, b in zip(then.output, other.output)]


def _if_parsed_as_conditional(facts: NodeFacts) -> bool:
    """A constant condition makes the parser import only the selected branch (8.6-GA importIf); no conditional."""
    return not facts.is_constant(facts.input(0))


@rule("if-branch-shapes", {"If"}, "If branches whose outputs may differ in size: parsers before 9.0 fail on a "
      "branch output size mismatch; remove the If (one fixed-size path for both cases)",
      "onnx-tensorrt docs/Changelog.md 9.0 GA ('Fixed a bug that previously caused If nodes to fail import due to "
      "branch output size mismatch'); builtin_op_importers.cpp importIf at release/8.6-GA 6ba67d3", before="9.0")
def _if_sizes(facts: NodeFacts) -> str | None:
    if not _if_parsed_as_conditional(facts):
        return None
    for index, (then, other) in enumerate(_branch_shapes(facts)):
        if then is None or other is None or None in then or None in other or then != other:
            return f"output {index}: then {_shape_text(then)} vs else {_shape_text(other)}"
    return None


@rule("if-branch-rank", {"If"}, "If branches whose outputs differ in rank: TensorRT's conditional needs the same "
      "rank in both branches; remove the If or give both branches the same rank",
      "onnx-tensorrt docs/operators.md If row at 10.1-GA 96e7811 and 10.15 GA ('must have the same rank')",
      since="9.0")
def _if_rank(facts: NodeFacts) -> str | None:
    if not _if_parsed_as_conditional(facts):
        return None
    for index, (then, other) in enumerate(_branch_shapes(facts)):
        if then is not None and other is not None and len(then) != len(other):
            return f"output {index}: rank {len(then)} vs {len(other)}"
    return None


@rule("loop-dynamic-scan", {"Loop"}, "Loop with scan outputs and a run-time trip count: TensorRT's loop cannot "
      "concatenate a scan output of dynamic length; detnas keeps Loops for the ONNX-Runtime-only --dynamic-batch "
      "graph, so export the TensorRT graph with a fixed --batch N (no Loop)",
      "onnx-tensorrt docs/operators.md Loop row at 10.1-GA 96e7811 and 10.15 GA ('Scan output length cannot be "
      "dynamic'); detnas writes no Loop outside --dynamic-batch")
def _loop_scan(facts: NodeFacts) -> str | None:
    body = facts.attribute("body")
    carried = len(facts.node.input) - 2
    scan_outputs = len(body.output) - 1 - carried
    trip = facts.input(0)
    if scan_outputs > 0 and trip and not facts.is_constant(trip):
        return f"{scan_outputs} scan outputs, trip count '{trip}'"
    return None


# --- inputs the importers read as weights (initializers or Constant outputs) ---------------------------------------
def _axes_input_not_constant(facts: NodeFacts, index: int) -> str | None:
    name = facts.input(index)
    return f"axes input '{name}' is computed at run time" if name and not facts.is_constant(name) else None


@rule("slice-axes", {"Slice"}, "Slice with tensor axes: the parser needs axes as an initializer or Constant before "
      "10.3; fold the axes to a constant",
      "onnx-tensorrt builtin_op_importers.cpp importSlice at release/8.6-GA 6ba67d3 and onnxOpImporters.cpp at release/10.0-GA "
      "1b4dafe ('This version of TensorRT does not support dynamic axes'); docs/Changelog.md 10.3 GA ('Added "
      "support for tensor axes inputs for Slice nodes')", before="10.3")
def _slice_axes(facts: NodeFacts) -> str | None:
    return _axes_input_not_constant(facts, 3)


@rule("squeeze-axes", {"Squeeze", "Unsqueeze"}, "Squeeze/Unsqueeze with tensor axes: the parser needs axes as an "
      "initializer or Constant before 10.7; fold the axes to a constant",
      "onnx-tensorrt onnxOpImporters.cpp importSqueeze ('Squeeze axes input must be an initializer!') and importUnsqueeze ('Axes "
      "input for unsqueeze operation should be a constant tensor') at release/10.0-GA 1b4dafe, same at "
      "release/8.6-GA; docs/Changelog.md 10.7 GA ('Added dynamic axes support for Squeeze and Unsqueeze')",
      before="10.7")
def _squeeze_axes(facts: NodeFacts) -> str | None:
    return _axes_input_not_constant(facts, 1)


@rule("squeeze-dynamic-all", {"Squeeze"}, "Squeeze without axes on an input of dynamic shape: the parser cannot "
      "infer which dimensions to squeeze; give the axes explicitly",
      "onnx-tensorrt onnxOpImporters.cpp importSqueeze at release/10.0-GA 1b4dafe ('Cannot infer squeeze dimensions from a "
      "dynamic shape'), same at release/8.6-GA")
def _squeeze_all(facts: NodeFacts) -> str | None:
    if facts.input(1) or facts.attribute("axes"):
        return None
    shape = facts.shapes.get(facts.input(0))
    return f"input shape {_shape_text(shape)}" if shape is not None and None in shape else None


@rule("reduce-axes", REDUCE_OPS, "Reduce with tensor axes: the parser needs the axes input as an initializer or "
      "Constant; fold the axes to a constant",
      "onnx-tensorrt importerUtils.cpp reduceTensor at release/10.0-GA 1b4dafe ('Axis input must be an initializer!'), "
      "onnx2trt_utils.cpp at release/8.6-GA; docs/operators.md 10.15 GA ('axes must be an initializer')")
def _reduce_axes(facts: NodeFacts) -> str | None:
    return _axes_input_not_constant(facts, 1)


@rule("topk-k", {"TopK"}, f"TopK K must be a constant <= {TOPK_MAX_K} (TensorRT's TopK limit; a K computed at run "
      "time is only checked when the engine runs); use a fixed top-k",
      f"onnx-tensorrt docs/operators.md 10.15 GA TopK row ('K input must be less than {TOPK_MAX_K}'); TensorRT operator docs TopK "
      "(k <= 3840); docs/Changelog.md 8.6 EA (dynamic K imported as a layer input)")
def _topk_k(facts: NodeFacts) -> str | None:
    k_name = facts.input(1)
    if not k_name:  # opset < 10: K is an attribute
        k = facts.attribute("k")
        return f"K = {k}" if k is not None and k > TOPK_MAX_K else None
    if not facts.is_constant(k_name):
        return f"K '{k_name}' is computed at run time"
    value = facts.value(k_name)
    if value is not None and int(np.max(value)) > TOPK_MAX_K:
        return f"K = {int(np.max(value))}"
    return None


@rule("topk-sorted", {"TopK"}, "TopK with sorted=0: the parser requires sorted=1; export with sorted output",
      "onnx-tensorrt docs/operators.md 10.15 GA TopK row ('sorted must be 1')", since="10.15")
def _topk_sorted(facts: NodeFacts) -> str | None:
    return "sorted = 0" if facts.attribute("sorted") == 0 else None


# --- NonMaxSuppression: parsed into INMSLayer (native since 8.5) ---------------------------------------------------
@rule("nms-score-threshold", {"NonMaxSuppression"}, "NonMaxSuppression without score_threshold: TensorRT's INMSLayer "
      "drops scores <= 0 (its default threshold) where ONNX keeps them, so results differ; give an explicit score "
      "threshold on probability scores",
      "TensorRT C++ API INMSLayer (8.6.1: 'ScoreThreshold ... is an optional input with default 0.0f', a score must "
      "exceed it); builtin_op_importers.cpp importNonMaxSuppression at release/8.6-GA 6ba67d3 sets input 4 only "
      "when given")
def _nms_threshold(facts: NodeFacts) -> str | None:
    return "" if not facts.input(4) else None


@rule("nms-box-limit", {"NonMaxSuppression"}, f"NonMaxSuppression over more than {NMS_MAX_BOXES} boxes per image: "
      f"TensorRT's INMSLayer considers at most {NMS_MAX_BOXES} (2000 on SM 5.3/6.2) and silently drops the rest; "
      "cap the candidates with a fixed pre-NMS top-k",
      "TensorRT operator docs NMS ('TopK box limit ... 5000 otherwise', 10.7 and latest)")
def _nms_box_limit(facts: NodeFacts) -> str | None:
    scores = facts.shapes.get(facts.input(1))
    if scores is None or len(scores) != 3 or scores[1] is None or scores[2] is None:
        return None
    candidates = scores[1] * scores[2]
    return f"scores {_shape_text(scores)}: {candidates} boxes x classes" if candidates > NMS_MAX_BOXES else None


# --- Q/DQ element types: what TensorRT's explicit quantization takes ----------------------------------------------
def _type_names(*names: str) -> frozenset[int]:
    from onnx import TensorProto

    return frozenset(getattr(TensorProto, n) for n in names if hasattr(TensorProto, n))


def _type_text(dtype: int | None) -> str:
    from onnx import TensorProto

    return "unknown" if dtype is None else TensorProto.DataType.Name(dtype)


#: (since, before, quantized types a DequantizeLinear reads / a QuantizeLinear writes, float types a QuantizeLinear
#: reads, where it is stated); INT32 is in none of them: ONNX Runtime's quantized biases (QuantizeBias) are refused.
QDQ_TYPES = (
    (None, "10.0", ("INT8",), ("FLOAT", "FLOAT16"),
     "onnx-tensorrt docs/operators.md at release/8.6-GA 6ba67d3 (DequantizeLinear: INT8; QuantizeLinear: FP32, "
     "FP16; 'x_zero_point must be zero')"),
    ("10.0", "11", ("INT8", "FLOAT8E4M3FN", "INT4"), ("FLOAT", "FLOAT16", "BFLOAT16"),
     "onnx-tensorrt docs/operators.md at release/10.0-GA eb43908 and main 7ecb49a (DequantizeLinear: INT8, FP8, "
     "INT4; QuantizeLinear: FP32, FP16, BF16; 'INT8, INT4, and FP8 are treated as Quantized Types')"),
    ("11", None, ("INT8", "FLOAT8E4M3FN", "INT4", "FLOAT4E2M1"), ("FLOAT", "FLOAT16", "BFLOAT16"),
     "onnx-tensorrt docs/operators.md at main 7ecb49a (10.x types); TensorRT 11.5 developer guide, Explicit "
     "Quantization ('a low-precision quantized type (INT8, FP8, INT4, or FP4)')"),
)


def _qdq_rules() -> None:
    for since, before, quantized, floats, source in QDQ_TYPES:
        q_types, f_types = _type_names(*quantized), _type_names(*floats)
        allowed = ", ".join(quantized)

        def dequantize(facts: NodeFacts, q_types: frozenset[int] = q_types) -> str | None:
            dtype = facts.types.get(facts.input(0))
            return None if dtype is None or dtype in q_types else f"input '{facts.input(0)}' is {_type_text(dtype)}"

        def quantize(facts: NodeFacts, q_types: frozenset[int] = q_types, f_types: frozenset[int] = f_types) -> str | None:
            dtype = facts.types.get(facts.input(0))
            if dtype is not None and dtype not in f_types:
                return f"input '{facts.input(0)}' is {_type_text(dtype)}"
            written = facts.attribute("output_dtype") or facts.types.get(facts.input(2))
            return f"writes {_type_text(written)}" if written and written not in q_types else None

        rule("dequantize-type", {"DequantizeLinear"}, f"DequantizeLinear of a type this parser cannot dequantize (it "
             f"takes {allowed}); an INT32 input is a bias quantized by ONNX Runtime: quantize with QuantizeBias off "
             "(the bias stays float)", source, since=since, before=before)(dequantize)
        rule("quantize-type", {"QuantizeLinear"}, f"QuantizeLinear from or to a type this parser does not take "
             f"(from {', '.join(floats)} to {allowed}); quantize float activations to INT8", source, since=since,
             before=before)(quantize)


_qdq_rules()


def _shape_text(shape: Shape | None) -> str:
    return "unknown" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


# --- walking the model -----------------------------------------------------------------------------------------
def load_model(model: Any) -> Any:
    """An onnx.ModelProto as given, or loaded from a path (a one-line error if it is no ONNX file)."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    try:
        loaded = onnx.load(str(path))
    except FileNotFoundError:
        raise DetnasError(f"{path}: no such file; pass an exported .onnx model") from None
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
        raise DetnasError(f"{path}: not a readable ONNX model ({type(exc).__name__}); pass an exported .onnx "
                          "file") from None
    if not loaded.graph.node:  # an empty file parses as an empty model: checking its 0 nodes would pass
        size = path.stat().st_size
        raise DetnasError(f"{path}: holds no ONNX graph ({'an empty file' if size == 0 else f'{size} bytes, 0 nodes'}"
                          "); pass an exported .onnx file (a write cut short leaves such a file: export again)")
    return loaded


def _static_shapes(model: Any) -> tuple[dict[str, Shape], dict[str, int]]:
    """Every tensor's static shape and element type from ONNX shape inference, initializers and Constant nodes
    (subgraphs included); tensors it cannot type are left out, so rules that need a shape or type stay silent on
    them rather than guess."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference is best effort: the declared value_info still count
        inferred = model
    shapes: dict[str, Shape] = {}
    types: dict[str, int] = {}
    for graph in _graphs(inferred.graph):
        for value in (*graph.input, *graph.output, *graph.value_info):
            tensor = value.type.tensor_type
            if tensor.elem_type:
                types[value.name] = tensor.elem_type
            if tensor.HasField("shape"):
                shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim)
        types.update({t.name: t.data_type for t in graph.initializer})
        types.update({n.output[0]: a.t.data_type for n in graph.node if n.op_type == "Constant" and n.output
                      for a in n.attribute if a.name == "value"})
    return shapes, types


def _graphs(graph: Any) -> Iterator[Any]:
    yield graph
    for node in graph.node:
        for _, sub in _subgraphs(node):
            yield from _graphs(sub)


def _subgraphs(node: Any) -> list[tuple[str, Any]]:
    """(attribute name, graph) of the node's subgraphs: If branches, Loop / Scan bodies."""
    from onnx import AttributeProto

    found = []
    for attr in node.attribute:
        if attr.type == AttributeProto.GRAPH:
            found.append((attr.name, attr.g))
        elif attr.type == AttributeProto.GRAPHS:
            found.extend((f"{attr.name}[{i}]", g) for i, g in enumerate(attr.graphs))
    return found


def _constant_value(node: Any) -> np.ndarray | None:
    from onnx import helper, numpy_helper

    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if attr.name == "value":
            return numpy_helper.to_array(value)
        if attr.name in ("value_int", "value_ints", "value_float", "value_floats"):
            return np.asarray(value)
    return None


def _initializer_value(tensor: Any) -> np.ndarray | None:
    """The value of a small initializer (axes, K, thresholds); weights are only known to be constant."""
    from onnx import numpy_helper

    if tensor.data_location == tensor.EXTERNAL or int(np.prod(tensor.dims)) > SMALL_CONSTANT:
        return None
    return numpy_helper.to_array(tensor)


def _walk(graph: Any, path: str, outer: dict[str, np.ndarray | None], shapes: dict[str, Shape],
          types: dict[str, int]) -> Iterator[NodeFacts]:
    """Every node of `graph` and its subgraphs, each with the constants of its scope (outer scopes included, as the
    parser resolves subgraph names; a name the subgraph redefines shadows the outer one)."""
    constants = dict(outer)
    initializers = {t.name: _initializer_value(t) for t in graph.initializer}
    for value in graph.input:  # a subgraph input shadows an outer name; an input with an initializer stays weights
        if value.name not in initializers:
            constants.pop(value.name, None)
    constants.update(initializers)
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.output:
            constants[node.output[0]] = _constant_value(node)
        name = node.name or f"{path}:{node.op_type}#{index}"
        yield NodeFacts(node, name, path, constants, shapes, types)
        for attr_name, sub in _subgraphs(node):
            yield from _walk(sub, f"{path}/{node.name or node.op_type}.{attr_name}", constants, shapes, types)


def node_facts(model: Any) -> list[NodeFacts]:
    """Every node of `model` (a ModelProto or a path), subgraphs included, ready for the rules."""
    model = load_model(model)
    return list(_walk(model.graph, "main", {}, *_static_shapes(model)))


def lint(model: Any, versions: tuple[str, ...] | list[str] = PARSER_VERSIONS) -> list[LintReport]:
    """One `LintReport` per parser version for `model` (an onnx.ModelProto or a path to an .onnx file)."""
    parsed = [(text, parse_version(text)) for text in versions]
    facts = node_facts(model)
    in_subgraphs = sum(f.in_subgraph for f in facts)
    reports = []
    newest = parse_version(PARSER_VERSIONS[-1])
    for text, version in parsed:
        report = LintReport(text, len(facts), in_subgraphs, note=_rules_note(text, version, newest))
        active = [r for r in RULES if r.applies(version)]
        for fact in facts:
            for candidate in active:
                if fact.node.op_type in candidate.ops and fact.node.domain in ("", "ai.onnx"):
                    detail = candidate.breaks(fact)
                    if detail is not None:
                        report.findings.append(Finding(fact.name, fact.node.op_type, fact.graph, candidate.id,
                                                       candidate.text, candidate.source, detail))
        reports.append(report)
    return reports


def _rules_note(text: str, version: Version, newest: Version) -> str:
    """What a report for a version that is not one of `PARSER_VERSIONS` was judged by ('' for those)."""
    if text in PARSER_VERSIONS:
        return ""
    if version[0] > newest[0]:
        return f"newer than TensorRT {PARSER_VERSIONS[-1]}, the newest parser the rules know: linted with its rules"
    return f"not one of the parsers studied ({', '.join(PARSER_VERSIONS)}): each rule applied by the versions it names"


def refuse_if_rejected(model_path: str | Path, version: str, shown: str | Path | None = None) -> LintReport:
    """Raise a one-line DetnasError naming the first node, op and rule the TensorRT `version` parser rejects
    (the file named as `shown`, where a staged copy is linted before it is published)."""
    parse_version(version, what="installed TensorRT")
    report = lint(model_path, (version,))[0]
    name = shown or model_path
    if report.findings:
        more = len(report.findings) - 1
        raise DetnasError(f"{name}: the TensorRT {version} parser would reject this graph: "
                          f"{report.findings[0].line()}"
                          + (f" (+{more} more; see detnas export check {name} --trt {version})" if more else ""))
    return report
