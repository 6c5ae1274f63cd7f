"""Which nodes of an exported detector are the network (backbone, FPN, heads) and which are post-processing:
both reduced precisions convert only the network."""

from __future__ import annotations

import re
from typing import Any

#: module scopes (as the TorchScript exporter names nodes) of the network proper: everything else is post-processing
NETWORK_SCOPES = frozenset({"backbone", "head", "box_head", "box_predictor"})


def module_scopes(node_name: str) -> set[str]:
    """'/head/cls_logits_3/Conv' -> {'head', 'cls_logits'}: the module path the TorchScript exporter names a node
    by (a module called again gets a _N suffix)."""
    return {re.sub(r"_\d+$", "", part) for part in node_name.split("/")[1:-1]}


def network_nodes(graph: Any) -> set[str]:
    """Names of the network's nodes (backbone, FPN, heads); a graph without those scopes (a bare backbone, as the
    bench times one) is all network."""
    named = {n.name for n in graph.node if NETWORK_SCOPES & module_scopes(n.name)}
    return named or {n.name for n in graph.node}

