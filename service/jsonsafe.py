"""JSON has no NaN or infinity, and serialisers have a depth limit: the one place that makes
stored documents safe to send, whatever was stored before the input rules (``service.inputs``)."""

from __future__ import annotations

import math
from typing import Any

MAX_DEPTH = 64
"""Containers nested deeper than this are shown as ``TOO_DEEP``: pydantic refuses to serialise
past a few hundred levels and ``json.dumps`` recurses, so a deep stored value must not reach them."""
TOO_DEEP = f"(nested deeper than {MAX_DEPTH} levels: not shown)"


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (at any depth) replaced by None, dict keys as text,
    tuples as lists, and containers below ``MAX_DEPTH`` levels replaced by ``TOO_DEEP``.
    Iterative: no input can exhaust the stack."""
    root: list[Any] = [None]
    # Each entry: (value to convert, container to put the result in, key or index there, depth).
    stack: list[tuple[Any, Any, Any, int]] = [(obj, root, 0, 0)]
    while stack:
        value, parent, slot, depth = stack.pop()
        if isinstance(value, float):
            parent[slot] = value if math.isfinite(value) else None
        elif isinstance(value, (dict, list, tuple)):
            if depth >= MAX_DEPTH:
                parent[slot] = TOO_DEEP
            elif isinstance(value, dict):
                out: dict[str, Any] = {}
                parent[slot] = out
                for k, v in value.items():
                    out[str(k)] = None  # keeps the key order
                    stack.append((v, out, str(k), depth + 1))
            else:
                items: list[Any] = [None] * len(value)
                parent[slot] = items
                stack.extend((v, items, i, depth + 1) for i, v in enumerate(value))
        else:
            parent[slot] = value
    return root[0]
