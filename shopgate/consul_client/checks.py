"""`/v1/health/state/any`, every check in the catalog, read by its difference from the last answer.

A watcher gets this whole list again after every change anywhere (Consul's blocking index for it
is the checks table's): at 10,000 checks ~3 MB of JSON, 60 ms median to decode with the standard
library (bench/checks.py), all of it holding the GIL. Two answers in a row differ only where checks changed, and
Consul sends them in one order (by node, then check ID) in compact JSON. So `CheckList` keeps the
last answer's bytes and each row's size in it; the next answer is compared with it in C (common
prefix and suffix, memcmp in place), the sizes tell which rows lie between, and only those are
decoded (msgspec, into small typed rows that skip Output, Notes and the rest). The sizes are kept
with running totals per block of rows, so a row that changes size costs its block, not a shift of
every row after it. What is left of the fleet's size is the comparison itself: 0.8 ms median per
change at 10,000 checks (bench/checks.py; 2.5 ms when every row's place was shifted).

The delta is exact whatever the answers: an answer that is not compact (where its rows lie cannot be
known) or whose middle does not decode is decoded whole and compared row by row, and an answer
that is not a list of checks raises ValueError, which the read turns into `CatalogUnavailable`
(the watcher keeps what it had).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from typing import Iterable

import msgspec

from shopgate.consul_client.client import QueryResult, read_raw

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
    """The last answer, its rows and each row's size in it; `update(body)` -> the CheckDelta."""

    def __init__(self) -> None:
        self.rows: list[CheckRow] = []
        self._body = b""
        self._sizes = _Sizes()   # each row's bytes in _body; empty: not known

    def update(self, body: bytes) -> CheckDelta:
        if body == self._body:
            return CheckDelta()
        if self._sizes:
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
        self._sizes = _Sizes(_lengths(body, len(rows)) or ())
        return delta

    def _update_middle(self, body: bytes) -> CheckDelta:
        """Only the rows between the common prefix and the common suffix of the two answers."""
        old, sizes = self._body, self._sizes
        prefix = _common_prefix(old, body)
        suffix = _common_suffix(old, body, min(len(old), len(body)) - prefix)
        first = min(len(self.rows), sizes.first_reaching(prefix + 1) - 1)   # rows before it end within the prefix
        last = max(first, sizes.first_reaching(len(old) - suffix - 1))      # rows from it on start within the suffix
        begin = sizes.before(first) if first else 1                           # after the row (or the '[') kept before
        end = (1 + sizes.before(last) if last < len(self.rows) else len(old) - 1) + len(body) - len(old)
        array = b"[" + body[begin:end].strip(b",") + b"]"
        rows = decode_checks(array)
        lengths = _lengths(array, len(rows))
        if lengths is None or body[:1] != b"[" or body[-1:] != b"]":
            raise ValueError("the answer's layout changed")
        gone = self.rows[first:last]
        sizes.replace(first, last, lengths)
        if sizes.total() != len(body):   # the rows do not tile the answer: where they lie is unknown from here on
            self._sizes = _Sizes()
            raise ValueError("the answer's layout changed")
        kept = set(gone) & set(rows)
        self.rows[first:last] = rows
        self._body = body
        return CheckDelta(tuple(r for r in gone if r not in kept), tuple(r for r in rows if r not in kept))


class _Sizes:
    """Each row's size in an answer (its bytes and the comma after it), with running totals per block
    of rows: a row that changes size moves no other row's number, so one change costs a block, not
    the whole list. `before(k)` is where row k starts, less the opening '['."""

    BLOCK = 128

    def __init__(self, lengths: Iterable[int] = ()) -> None:
        self._sizes = [length + 1 for length in lengths]
        self._blocks = [sum(self._sizes[at:at + self.BLOCK]) for at in range(0, len(self._sizes), self.BLOCK)]

    def __bool__(self) -> bool:
        return bool(self._sizes)

    def before(self, row: int) -> int:
        """The bytes of the rows before `row`, commas included."""
        block = row // self.BLOCK
        return sum(self._blocks[:block]) + sum(self._sizes[block * self.BLOCK:row])

    def first_reaching(self, total: int) -> int:
        """The smallest k (0..rows) with before(k) >= total; rows + 1 when there is none."""
        if total <= 0:
            return 0
        running = list(accumulate(self._blocks))
        block = bisect_left(running, total)
        if block == len(running):
            return len(self._sizes) + 1
        at = block * self.BLOCK
        within = list(accumulate(self._sizes[at:at + self.BLOCK], initial=running[block - 1] if block else 0))
        return at + bisect_left(within, total)

    def replace(self, first: int, last: int, lengths: list[int]) -> None:
        """Rows first..last-1 become rows of these lengths; the block totals from `first` on follow."""
        self._sizes[first:last] = [length + 1 for length in lengths]
        stop = len(self._sizes) if len(lengths) != last - first else last
        for block in range(first // self.BLOCK, -(-stop // self.BLOCK)):
            at = block * self.BLOCK
            total = sum(self._sizes[at:at + self.BLOCK])
            if block < len(self._blocks):
                self._blocks[block] = total
            else:
                self._blocks.append(total)
        del self._blocks[-(-len(self._sizes) // self.BLOCK):]

    def total(self) -> int:
        """The answer's length these sizes add up to: '[' and ']' around the rows, no comma after the last."""
        return sum(self._blocks) + 1 if self._sizes else 2


def _lengths(array: bytes, count: int) -> list[int] | None:
    """The byte length of each of the `count` elements of a JSON array, or None when the array is not
    compact (only separators of exactly one comma make the rows' places knowable from the lengths)."""
    try:
        lengths = [len(raw) for raw in _SPANS.decode(array)]
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if len(lengths) != count or 2 + sum(lengths) + max(0, count - 1) != len(array):
        return None
    return lengths


def _common_prefix(a: bytes, b: bytes) -> int:
    other = memoryview(b)   # compared in place (startswith), no copies of the blocks
    return _matching(min(len(a), len(b)), lambda at, size: a.startswith(other[at:at + size], at))


def _common_suffix(a: bytes, b: bytes, limit: int) -> int:
    """The common suffix's length, at most `limit` (so that it never overlaps the common prefix)."""
    other = memoryview(b)
    return _matching(limit, lambda at, size: a.startswith(other[len(b) - at - size:len(b) - at], len(a) - at - size))


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
    """The answer's bytes, for a CheckList."""
    return read_raw(consul, PATH, index, wait)
