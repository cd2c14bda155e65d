"""Turn Consul-style requests into plain Python values, or a clear 400.

Consul decodes JSON bodies case-insensitively and accepts snake_case
(`tagged_addresses` for `TaggedAddresses`); query flags such as `?recurse`
count by presence; durations use Go's syntax (`10s`, `1m30s`, `60000ms`).
Everything here is pure: it takes text or decoded JSON and returns values,
raising `BadRequest` with a message that says what was wrong and where.
"""

from __future__ import annotations

import json
import re
from typing import Any

from multidict import MultiMapping

MAX_DURATION = (2**63 - 1) * 1e-9   # Go's time.Duration is int64 nanoseconds
MAX_WAIT = 600.0            # Consul caps a blocking query's wait at 10 minutes
DEFAULT_WAIT = 300.0        # and defaults it to 5 minutes


class ClientError(Exception):
    """A request we refuse; the message goes back as the body with `status`."""

    status = 400


class BadRequest(ClientError):
    """The client sent something we cannot accept (400)."""


class NotFound(ClientError):
    """The request names something that does not exist (404)."""

    status = 404


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: Any, what: str = "duration") -> float:
    """Go's time.ParseDuration, in seconds. A bare number counts as nanoseconds, as in Consul's JSON."""
    seconds = _parse_duration(text, what)
    if seconds > MAX_DURATION:
        raise BadRequest(f"Invalid {what}: {text!r} is out of range (at most {MAX_DURATION / 31_557_600:.0f} years)")
    return seconds


def _parse_duration(text: Any, what: str) -> float:
    if isinstance(text, bool):
        raise BadRequest(f"Invalid {what}: {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise BadRequest(f"Invalid {what}: {text!r} is negative")
        return float(text) * 1e-9
    if not isinstance(text, str):
        raise BadRequest(f"Invalid {what}: expected a duration string like \"10s\", got {type(text).__name__}")
    body = text
    sign = 1.0
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise BadRequest(f"Invalid {what}: {text!r}")
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(body):
        raise BadRequest(f"Invalid {what}: {text!r} (expected Go duration syntax such as 10s, 1m30s, 250ms)")
    if sign < 0:
        raise BadRequest(f"Invalid {what}: {text!r} is negative")
    return total


def format_duration(seconds: float) -> str:
    """Seconds back to Go's String() form (`10s`, `1m30s`, `100ms`), as Consul echoes Interval/Timeout."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}µs"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{int(hours)}h"
    if hours or minutes:
        out += f"{int(minutes)}m"
    return out + f"{secs:g}s"


def parse_bool(text: str, what: str) -> bool:
    """Go's strconv.ParseBool."""
    if text in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if text in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise BadRequest(f"Invalid value for {what}: {text!r} (expected true or false)")


def is_decimal(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes '¹' or '٣', which int() refuses (a 500 instead of a 400)."""
    return text.isascii() and text.isdigit()


def parse_uint(text: str, what: str) -> int:
    if not is_decimal(text):
        raise BadRequest(f"Invalid {what}: {text!r}")
    return int(text)


def decode_json(body: bytes, what: str = "request body") -> Any:
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Request decode failed: {what} is not valid JSON: {exc}") from None


def fold(key: str) -> str:
    """How Consul compares JSON keys: case-insensitively, underscores and dashes ignored."""
    return key.replace("_", "").replace("-", "").lower()


class Fields:
    """A decoded JSON object whose keys are looked up the way Consul's decoder does.

    `Fields(obj, "service definition").text("Name")` finds `name`, `NAME` or `Name`
    and checks the type, so every handler validates with one vocabulary.
    """

    def __init__(self, raw: Any, where: str):
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise BadRequest(f"Request decode failed: {where} must be a JSON object, got {_json_type(raw)}")
        self.where = where
        self._raw = raw
        self._by_folded = {fold(k): v for k, v in raw.items()}

    def as_dict(self) -> dict[str, Any]:
        """The object as sent (keys as the client spelled them), for opaque pass-through fields."""
        return dict(self._raw)

    @property
    def empty(self) -> bool:
        return not any(v is not None for v in self._by_folded.values())

    def has(self, *names: str) -> bool:
        return any(self._by_folded.get(fold(n)) is not None for n in names)

    def raw(self, *names: str) -> Any:
        for name in names:
            value = self._by_folded.get(fold(name))
            if value is not None:
                return value
        return None

    def _typed(self, names: tuple[str, ...], kinds: tuple[type, ...], expected: str) -> Any:
        value = self.raw(*names)
        if value is None:
            return None
        if isinstance(value, bool) and bool not in kinds:
            raise self.wrong(names[0], expected, value)
        if not isinstance(value, kinds):
            raise self.wrong(names[0], expected, value)
        return value

    def wrong(self, name: str, expected: str, value: Any) -> BadRequest:
        return BadRequest(f"Request decode failed: {self.where}: {name} must be {expected}, got {_json_type(value)}")

    def text(self, *names: str, default: str = "") -> str:
        value = self._typed(names, (str,), "a string")
        return default if value is None else value

    def integer(self, *names: str, default: int = 0) -> int:
        value = self.raw(*names)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong(names[0], "an integer", value)
        return value

    def flag(self, *names: str, default: bool = False) -> bool:
        value = self._typed(names, (bool,), "true or false")
        return default if value is None else value

    def strings(self, *names: str) -> list[str]:
        value = self._typed(names, (list,), "a list of strings")
        if value is None:
            return []
        if not all(isinstance(item, str) for item in value):
            raise self.wrong(names[0], "a list of strings", value)
        return list(value)

    def string_map(self, *names: str) -> dict[str, str]:
        value = self._typed(names, (dict,), "an object of strings")
        if value is None:
            return {}
        if not all(isinstance(v, str) for v in value.values()):
            raise self.wrong(names[0], "an object with string values", value)
        return dict(value)

    def obj(self, *names: str) -> "Fields":
        value = self._typed(names, (dict,), "an object")
        return Fields(value, f"{self.where}.{names[0]}")

    def objects(self, *names: str) -> list["Fields"]:
        value = self._typed(names, (list,), "a list of objects")
        if value is None:
            return []
        return [Fields(item, f"{self.where}.{names[0]}[{i}]") for i, item in enumerate(value)]

    def duration(self, *names: str) -> float | None:
        value = self.raw(*names)
        if value is None or value == "":
            return None
        return parse_duration(value, f"{self.where}.{names[0]}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# ---------------------------------------------------------------- query strings


class Query:
    """The query string of one request, read with Consul's rules (presence flags, repeatable tags)."""

    def __init__(self, params: MultiMapping[str]):
        self.params = params

    def present(self, name: str) -> bool:
        return name in self.params

    def get(self, name: str, default: str = "") -> str:
        return self.params.get(name, default)

    def getall(self, name: str) -> list[str]:
        return list(self.params.getall(name, []))

    def truthy(self, name: str) -> bool:
        """`?passing` alone means true; otherwise the value is a Go bool."""
        if name not in self.params:
            return False
        value = self.params[name]
        return True if value == "" else parse_bool(value, name)

    def required_bool(self, name: str) -> bool:
        """A Go bool that must be given (`?enable=` switches maintenance on or off: no default either way)."""
        if name not in self.params:
            raise BadRequest(f"Missing value for {name}")
        return parse_bool(self.params[name], name)

    def uint(self, name: str, default: int = 0) -> int:
        if name not in self.params or self.params[name] == "":
            return default
        return parse_uint(self.params[name], name)

    def blocking(self) -> tuple[int, float]:
        """(index, wait seconds) of a blocking query: `Invalid index` / `Invalid wait time` on bad input."""
        index = 0
        raw_index = self.params.get("index", "")
        if raw_index != "":
            if not is_decimal(raw_index):
                raise BadRequest("Invalid index")
            index = int(raw_index)
        wait = DEFAULT_WAIT
        raw_wait = self.params.get("wait", "")
        if raw_wait != "":
            try:
                wait = parse_duration(raw_wait, "wait time")
            except BadRequest:
                raise BadRequest("Invalid wait time") from None
        return index, min(wait, MAX_WAIT)

    def node_meta(self) -> dict[str, str]:
        """`?node-meta=key:value` (repeatable): nodes must carry every pair."""
        pairs = {}
        for item in self.getall("node-meta"):
            key, sep, value = item.partition(":")
            if not sep or not key:
                raise BadRequest(f"Invalid node-meta {item!r}: expected key:value")
            pairs[key] = value
        return pairs

    def consistency(self) -> str:
        stale, consistent = self.present("stale"), self.present("consistent")
        if stale and consistent:
            raise BadRequest("Cannot specify ?stale with ?consistent, conflicting semantics.")
        return "stale" if stale else "consistent" if consistent else "leader"
