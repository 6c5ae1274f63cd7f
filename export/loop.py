"""Dynamic batch for a traced detector: wrap the batch-1 graph in an ONNX Loop over the images.

Tracing unrolls torchvision's per-image post-processing, so a traced graph is only valid for the batch size it
was traced with. Running the batch-1 graph once per image inside a Loop keeps exactly that verified graph and
accepts any batch; the weights stay initializers of the outer graph, which the loop body reads by name.
"""

from __future__ import annotations

from typing import Any

from detnas.errors import DetnasError


def batch_loop(model: Any, batch_dim: str = "batch") -> Any:
    """Batch-1 ModelProto with one input [1, 3, H, W] and outputs [1, ...] -> the same with batch dim `batch_dim`."""
    import onnx
    from onnx import TensorProto, helper

    graph = model.graph
    if len(graph.input) != 1:
        raise DetnasError(f"batch_loop expects one graph input, found {len(graph.input)}")
    image = graph.input[0]
    dims = image.type.tensor_type.shape.dim
    if dims[0].dim_value != 1:
        raise DetnasError("batch_loop expects a graph traced with batch 1")
    per_image = "loop_image"
    body_nodes = [
        helper.make_node("Gather", [image.name, "loop_iter"], ["loop_image_chw"], axis=0),
        helper.make_node("Unsqueeze", ["loop_image_chw", "loop_axis0"], [per_image]),
        helper.make_node("Identity", ["loop_cond_in"], ["loop_cond_out"]),
    ]
    for node in graph.node:
        node.input[:] = [per_image if name == image.name else name for name in node.input]
        body_nodes.append(node)
    body_outputs = [helper.make_tensor_value_info("loop_cond_out", TensorProto.BOOL, [])]
    for out in graph.output:
        body_nodes.append(helper.make_node("Identity", [out.name], [f"loop_out_{out.name}"]))
        value = onnx.ValueInfoProto()
        value.CopyFrom(out)
        value.name = f"loop_out_{out.name}"
        body_outputs.append(value)
    body = helper.make_graph(
        body_nodes, "per_image",
        [helper.make_tensor_value_info("loop_iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("loop_cond_in", TensorProto.BOOL, [])],
        body_outputs,
        initializer=[helper.make_tensor("loop_axis0", TensorProto.INT64, [1], [0])],
    )
    outer_nodes = [
        helper.make_node("Shape", [image.name], ["batch_shape"], start=0, end=1),
        helper.make_node("Squeeze", ["batch_shape"], ["batch_count"]),
        helper.make_node("Constant", [], ["loop_cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", ["batch_count", "loop_cond"], [f"stacked_{o.name}" for o in graph.output], body=body),
        helper.make_node("Constant", [], ["squeeze_axis1"],
                         value=helper.make_tensor("a", TensorProto.INT64, [1], [1])),
    ]
    outputs = []
    for out in graph.output:
        outer_nodes.append(helper.make_node("Squeeze", [f"stacked_{out.name}", "squeeze_axis1"], [out.name]))
        value = onnx.ValueInfoProto()
        value.CopyFrom(out)
        value.type.tensor_type.shape.dim[0].dim_param = batch_dim
        outputs.append(value)
    new_input = onnx.ValueInfoProto()
    new_input.CopyFrom(image)
    new_input.type.tensor_type.shape.dim[0].dim_param = batch_dim
    outer = helper.make_graph(outer_nodes, graph.name, [new_input], outputs, initializer=list(graph.initializer))
    wrapped = helper.make_model(outer, opset_imports=list(model.opset_import), producer_name=model.producer_name)
    wrapped.ir_version = model.ir_version
    return wrapped
