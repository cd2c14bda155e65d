"""Request validation that says what is wrong and where.

Every check raises `InputError` (HTTP 400) naming the field; the app factory turns it
into `{"error": ..., "field": ...}`. Booleans are not integers here, whatever Python says.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Request


class InputError(Exception):
    """Bad input from the client: HTTP 400 unless `status` says otherwise."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status


def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or InputError saying why not."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise InputError("request body is empty; expected a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InputError(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def positive_int(body: dict[str, Any], field: str, maximum: int | None = None) -> int:
    value = _required(body, field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{field} must be an integer, got {_describe(value)}", field)
    if value < 1:
        raise InputError(f"{field} must be at least 1, got {value}", field)
    if maximum is not None and value > maximum:
        raise InputError(f"{field} must be at most {maximum}, got {value}", field)
    return value


def text(body: dict[str, Any], field: str, max_length: int = 200, required: bool = True, default: str = "") -> str:
    if field not in body and not required:
        return default
    value = _required(body, field)
    if not isinstance(value, str):
        raise InputError(f"{field} must be a string, got {_describe(value)}", field)
    value = value.strip()
    if not value:
        raise InputError(f"{field} must not be empty", field)
    if len(value) > max_length:
        raise InputError(f"{field} must be at most {max_length} characters, got {len(value)}", field)
    return value


def path_int(raw: str, what: str) -> int:
    """An integer id taken from the URL path."""
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:  # isdigit() alone takes '¹', which int() refuses
        raise InputError(f"{what} must be a positive integer, got {raw!r}", what)
    return int(raw)


def found(row: dict[str, Any] | None, message: str, field: str) -> dict[str, Any]:
    """The row a request names, or a 404 that says which one is missing."""
    if row is None:
        raise InputError(message, field, status=404)
    return row


def idempotency_key(request: Request, max_length: int = 200) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > max_length:
        raise InputError(f"Idempotency-Key header must be 1 to {max_length} characters", "Idempotency-Key")
    return key


def _required(body: dict[str, Any], field: str) -> Any:
    if field not in body or body[field] is None:
        raise InputError(f"missing field: {field}", field)
    return body[field]


def _describe(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return f"{kind.get(type(value), type(value).__name__)} {json.dumps(value)[:40]}"
