"""FP16 file: `onnxruntime.transformers.float16.convert_float_to_float16` on the network (backbone, FPN, heads).

Every other node (normalisation, anchors, box decoding, NMS, RoiAlign and its coordinates, padding) is blocked and
stays FP32; the converter puts an FP32 -> FP16 -> FP32 cast pair between two blocked nodes, which would round
boxes to FP16 between the decoding steps, so `_fuse_cast_round_trips` turns those pairs back into the FP32 edge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detnas.export.precision.network import network_nodes


def convert_fp16(source: str | Path, target: str | Path) -> Path:
    """FP16 network with FP32 inputs, outputs and post-processing (see the module docstring); returns `target`."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(source))
    network = network_nodes(model.graph)
    blocked = [n.name for n in model.graph.node if n.name not in network]
    half = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked,
                                    op_block_list=[*DEFAULT_OP_BLOCK_LIST, "If", "Loop"])  # bodies stay FP32
    _fuse_cast_round_trips(half.graph)
    del half.graph.value_info[:]  # the converter's are stale after the fusion; ORT and TensorRT infer them
    onnx.save(half, str(target))
    return Path(target)


def _fuse_cast_round_trips(graph: Any) -> None:
    """Undo the FP32 -> FP16 -> FP32 round trips the converter puts between blocked nodes: each Cast(FP16 -> FP32)
    of a converter-inserted Cast(FP32 -> FP16) becomes an Identity of the FP32 tensor, blocked subgraphs (If /
    Loop bodies) read the FP32 tensor too, then unused and duplicate casts are dropped and the nodes re-sorted."""
    from onnx import TensorProto, helper

    def cast_to(node: Any) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    fp32_of = {n.output[0]: n.input[0] for n in graph.node if cast_to(n) == TensorProto.FLOAT16
               and (n.name.endswith("_cast_to_fp16_node") or n.name.startswith("graph_input_cast"))}
    for node in graph.node:
        if cast_to(node) == TensorProto.FLOAT and node.input[0] in fp32_of:
            node.CopyFrom(helper.make_node("Identity", [fp32_of[node.input[0]]], list(node.output), name=node.name))
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _rename_inputs(sub, fp32_of)
    kept, seen = [], set()
    for node in graph.node:
        if node.output[0] not in seen:
            seen.update(node.output)
            kept.append(node)
    graph_outputs = {o.name for o in graph.output}
    while True:
        used = set().union(*(_names_used(n) for n in kept)) | graph_outputs
        alive = [n for n in kept if n.op_type != "Cast" or any(o in used for o in n.output)]
        if len(alive) == len(kept):
            break
        kept = alive
    del graph.node[:]
    graph.node.extend(_topological(kept))


def _rename_inputs(graph: Any, names: dict[str, str]) -> None:
    for node in graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _rename_inputs(sub, names)


def _names_used(node: Any) -> set[str]:
    """A node's inputs plus the outer-scope names its subgraphs (If / Loop bodies) read."""
    names = set(node.input)
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            for inner in sub.node:
                names |= _names_used(inner)
    return names


def _topological(nodes: list[Any]) -> list[Any]:
    """Nodes in an order where each comes after its producers (the converter appends its casts at the end)."""
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    order, state = [], [0] * len(nodes)  # 0 new, 1 visiting, 2 placed

    def place(i: int) -> None:
        stack = [(i, iter(sorted({producer[x] for x in _names_used(nodes[i]) if x in producer} - {i})))]
        state[i] = 1
        while stack:
            j, deps = stack[-1]
            k = next((d for d in deps if state[d] == 0), None)
            if k is None:
                stack.pop()
                state[j] = 2
                order.append(nodes[j])
            else:
                state[k] = 1
                stack.append((k, iter(sorted({producer[x] for x in _names_used(nodes[k]) if x in producer} - {k}))))

    for i in range(len(nodes)):
        if state[i] == 0:
            place(i)
    return order

