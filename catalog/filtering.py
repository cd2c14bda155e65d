"""Consul's `?filter=` expressions (go-bexpr)."""

from __future__ import annotations

from typing import Any

from catalog.parsing import BadRequest


def apply_filter(data: Any, expression: str) -> Any:
    """Keep the items of a list (or the values of a map) that match `expression`."""
    if not expression:
        return data
    raise BadRequest("Failed to create boolean expression evaluator: filter expressions are not supported yet")
