"""`/v1/health/state/any`, every check in the catalog, read by its difference from the last answer.

A watcher gets this whole list again after every change anywhere (Consul's blocking index for it
is the checks table's): at 10,000 checks ~3 MB of JSON, 60 ms median to decode with the standard
library (bench/checks.py), all of it holding the GIL. Two answers in a row differ only where checks changed, and
Consul sends them in one order (by node, then check ID) in compact JSON. So `CheckList` keeps the
last answer's bytes and each row's byte span; the next answer is compared with it in C (common
prefix and suffix), and only the rows in between are decoded (msgspec, into small typed rows that
skip Output, Notes and the rest). What is left of the fleet's size is that comparison and moving
the spans after a changed row: 2.5 ms median per change at 10,000 checks (bench/checks.py).

The delta is exact whatever the answers: an answer that is not compact (its spans cannot be
known) or whose middle does not decode is decoded whole and compared row by row, and an answer
that is not a list of checks raises ValueError, which the read turns into `CatalogUnavailable`
(the watcher keeps what it had).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass

import msgspec

from shopgate.consul_client.client import CatalogUnavailable, QueryResult, read

PATH = "/v1/health/state/any"
#: The block size in which two answers are compared: large enough that the comparison runs in C.
_BLOCK = 1 << 16


class CheckRow(msgspec.Struct, frozen=True, gc=False, rename="pascal"):
    """One check: whose it is (a node check has no service), its status and when it last changed."""

    node: str = ""
    check_id: str = msgspec.field(default="", name="CheckID")
    status: str = ""
    service_id: str = msgspec.field(default="", name="ServiceID")
    service_name: str = ""
    modify_index: int = 0


_ROWS = msgspec.json.Decoder(list[CheckRow])
_SPANS = msgspec.json.Decoder(list[msgspec.Raw])


@dataclass(frozen=True)
class CheckDelta:
    """What one answer changed: the rows gone (or changed, as they were) and the rows new (or changed, as they are)."""

    removed: tuple[CheckRow, ...] = ()
    added: tuple[CheckRow, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.removed and not self.added


def decode_checks(body: bytes) -> list[CheckRow]:
    """A `/v1/health/state/any` body -> CheckRows; raises ValueError naming what is wrong."""
    try:
        return _ROWS.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ValueError(f"not a list of checks: {error}") from error


class CheckList:
    """The last answer, its rows and where each row lies in it; `update(body)` -> the CheckDelta."""

    def __init__(self) -> None:
        self.rows: list[CheckRow] = []
        self._body = b""
        self._starts: list[int] = []   # each row's first byte in _body
        self._ends: list[int] = []     # one past each row's last byte; empty lists: spans unknown

    def update(self, body: bytes) -> CheckDelta:
        if body == self._body:
            return CheckDelta()
        if self._starts:
            try:
                return self._update_middle(body)
            except ValueError:
                pass   # not the same layout after all: the whole answer, below
        return self._update_whole(body)

    def _update_whole(self, body: bytes) -> CheckDelta:
        rows = decode_checks(body)
        old, new = set(self.rows), set(rows)
        delta = CheckDelta(tuple(r for r in self.rows if r not in new), tuple(r for r in rows if r not in old))
        self.rows, self._body = rows, body
        self._starts, self._ends = _spans(body, len(rows)) or ([], [])
        return delta

    def _update_middle(self, body: bytes) -> CheckDelta:
        """Only the rows between the common prefix and the common suffix of the two answers."""
        old = self._body
        prefix = _common_prefix(old, body)
        suffix = _common_suffix(old, body, min(len(old), len(body)) - prefix)
        first = bisect_right(self._ends, prefix)                    # rows before it lie in the prefix
        last = bisect_left(self._starts, len(old) - suffix, first)  # rows from it on lie in the suffix
        begin = self._ends[first - 1] if first else 1               # after the row (or the '[') kept before
        shift = len(body) - len(old)
        end = (self._starts[last] if last < len(self.rows) else len(old) - 1) + shift
        middle = body[begin:end]
        inner = middle.strip(b",")
        inner_at = begin + len(middle) - len(middle.lstrip(b","))
        array = b"[" + inner + b"]"
        rows = decode_checks(array)
        spans = _spans(array, len(rows))
        if spans is None or body[:1] != b"[" or body[-1:] != b"]":
            raise ValueError("the answer's layout changed")
        starts = [start - 1 + inner_at for start in spans[0]]
        ends = [end_ - 1 + inner_at for end_ in spans[1]]
        gone = self.rows[first:last]
        kept = set(gone) & set(rows)
        self.rows[first:last] = rows
        if shift:
            self._starts[first:] = starts + list(map(shift.__add__, self._starts[last:]))
            self._ends[first:] = ends + list(map(shift.__add__, self._ends[last:]))
        else:
            self._starts[first:last], self._ends[first:last] = starts, ends
        self._body = body
        return CheckDelta(tuple(r for r in gone if r not in kept), tuple(r for r in rows if r not in kept))


def _spans(array: bytes, count: int) -> tuple[list[int], list[int]] | None:
    """Each of the `count` elements' (start, end) in a JSON array, or None when the array is not
    compact (only separators of exactly one comma make the spans knowable from the lengths)."""
    try:
        lengths = [len(raw) for raw in _SPANS.decode(array)]
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if len(lengths) != count or 2 + sum(lengths) + max(0, count - 1) != len(array):
        return None
    starts, ends, at = [], [], 1
    for length in lengths:
        starts.append(at)
        ends.append(at + length)
        at += length + 1
    return starts, ends


def _common_prefix(a: bytes, b: bytes) -> int:
    return _matching(min(len(a), len(b)), lambda at, size: a[at:at + size] == b[at:at + size])


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    """The common suffix's length, at most `limit` (so that it never overlaps the common prefix)."""
    return _matching(limit, lambda at, size: a[len(a) - at - size:len(a) - at] == b[len(b) - at - size:len(b) - at])


def _matching(limit: int, same) -> int:
    """The largest n <= limit with `same(0, n)`, given `same(at, size)` for the run [at, at + size):
    block by block while whole blocks match, then halving the block where they stop."""
    at = 0
    while at < limit:
        size = min(_BLOCK, limit - at)
        if not same(at, size):
            break
        at += size
    else:
        return limit
    step = min(_BLOCK, limit - at)   # the first difference lies in [at, at + step)
    while step > 1:
        half = step // 2
        if same(at, half):
            at, step = at + half, step - half
        else:
            step = half
    return at


def read_checks(consul, index: int = 0, wait: str | None = None) -> QueryResult:
    """The answer's bytes (for a CheckList), blocking on `index` for up to `wait` when both are given
    (py-consul's session, token and timeouts; the one `read` and its errors)."""
    params = [("index", index), ("wait", wait)] if index and wait else [("index", index)] if index else []

    def answer(response) -> tuple[str | None, bytes]:
        if response.code != 200:
            raise CatalogUnavailable(f"{PATH}: HTTP {response.code}: {response.body[:200]!r}")
        return response.headers.get("X-Consul-Index"), response.body

    return read(PATH, consul.http.get, answer, PATH, params=params, headers=consul.health.agent.prepare_headers(None), raw=True)
