"""Q/DQ placement for TensorRT's fusions: the residual input of an Add that follows an INT8 Conv/Gemm is quantized,
and the layer's own output is not, as TensorRT's Q/DQ placement guide asks ('Quantize the residual input in
weighted-operations'; 'do not quantize the outputs of weighted operations'): TensorRT then fuses Conv + Add into
one INT8 kernel. Without the residual Q/DQ the Add runs unfused in floating point (`qdq-residual-add` in
export/trt_lint.py). In the FPN these are the top-down additions: lateral 1x1 Conv + upsampled coarser level.

`quantize_static` is given these Adds to quantize (so it calibrates the residual input's range, with the same
method as every other tensor) with their outputs left float; `place_residual_qdq` then removes the Q/DQ pair it
put on the Conv's side, leaving the Q/DQ on the residual side only.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def residual_adds(graph: Any, quantized: Collection[str]) -> list[str]:
    """Names of the Add nodes with one input written by a `quantized` node and another, non-constant input that
    is not (the residual to quantize)."""
    constant = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    writer = {o: n.name for n in graph.node for o in n.output}
    adds = []
    for node in graph.node:
        inputs = [i for i in node.input if i and i not in constant]
        if node.op_type != "Add" or len(inputs) != 2:
            continue
        from_layer = [writer.get(i) in quantized for i in inputs]
        if sum(from_layer) == 1:
            adds.append(node.name)
    return adds


def place_residual_qdq(model: Any, adds: Collection[str]) -> None:
    """In a quantized `model`, each of `adds` reads its weighted layer's output directly again (the Q/DQ pair
    `quantize_static` put there is dropped when nothing else reads it); its residual input keeps its Q/DQ pair."""
    graph = model.graph
    writer = {o: n for n in graph.node for o in n.output}
    weighted = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
    for node in graph.node:
        if node.name not in adds:
            continue
        for index, tensor in enumerate(node.input):
            dq = writer.get(tensor)
            q = writer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            layer = writer.get(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
            if layer is not None and layer.op_type in weighted:
                node.input[index] = q.input[0]
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    while dead := [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                   and not any(o in read for o in n.output)]:
        for n in dead:
            graph.node.remove(n)
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
