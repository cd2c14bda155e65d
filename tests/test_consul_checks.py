"""`/v1/health/state/any` read by difference (shopgate.consul_client.checks): whatever the answers, the
rows kept and the deltas handed on are exactly those of decoding every answer whole."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopgate.consul_client.checks import CheckList, CheckRow, _Sizes, decode_checks

# Check outputs as hostile as a check's output can be: JSON punctuation, quotes, escapes, the very text
# that starts a row, unicode; the catalog copies them into every answer.
OUTPUTS = st.one_of(st.sampled_from(["", "ok", '},{"Node":"a"', '\\"', "]", "\u2028x\u00e9"]), st.text(max_size=40))
KEYS = st.tuples(st.sampled_from(["a", "b", "n\u00e9"]), st.sampled_from([f"c{n}" for n in range(12)]))
CHECK = st.fixed_dictionaries({"Status": st.sampled_from(["passing", "warning", "critical", "bogus"]),
                               "ServiceName": st.sampled_from(["", "web", "api", "x\"y"]),
                               "Output": OUTPUTS, "ModifyIndex": st.integers(1, 10**6)})
ANSWERS = st.lists(st.tuples(st.dictionaries(KEYS, CHECK, max_size=14), st.booleans()), min_size=1, max_size=12)


def answer(checks: dict, compact: bool) -> bytes:
    """As Consul sends it: rows ordered by node then check ID (compact JSON, or a proxy's pretty print)."""
    rows = [{"Node": node, "CheckID": check_id, "Name": "n", "Notes": "", "ServiceID": check["ServiceName"] and f"{node}-{check_id}",
             "ServiceTags": [], "Definition": {}, "CreateIndex": 1, **check} for (node, check_id), check in sorted(checks.items())]
    return json.dumps(rows, separators=(",", ":") if compact else (", ", ": "), indent=None if compact else 1).encode()


@settings(max_examples=300, deadline=None)
@given(ANSWERS)
def test_reading_answers_by_their_difference_keeps_exactly_what_decoding_them_whole_gives(answers):
    with mock.patch.object(_Sizes, "BLOCK", 3):   # a few rows span several blocks of row sizes
        read_by_difference(answers)
    read_by_difference(answers)


def read_by_difference(answers) -> None:
    kept = CheckList()
    held: set[CheckRow] = set()
    for checks, compact in answers:
        body = answer(checks, compact)
        delta = kept.update(body)
        whole = decode_checks(body)
        assert set(delta.removed) <= held, "a removed row was held"
        held -= set(delta.removed)
        assert held.isdisjoint(delta.added), "an added row was not held before"
        held |= set(delta.added)
        assert held == set(whole) and kept.rows == whole


def test_a_change_to_one_check_in_ten_thousand_decodes_only_that_check():
    checks = {("node", f"service:svc{n:05d}"): {"Status": "passing", "ServiceName": f"svc{n // 5:05d}", "Output": "", "ModifyIndex": 5}
              for n in range(10_000)}
    kept = CheckList()
    assert len(kept.update(answer(checks, True)).added) == 10_000
    checks[("node", "service:svc04242")] = dict(checks[("node", "service:svc04242")], Status="critical", ModifyIndex=9)
    delta = kept.update(answer(checks, True))
    assert [r.check_id for r in delta.removed] == [r.check_id for r in delta.added] == ["service:svc04242"]
    assert delta.added[0].status == "critical" and delta.removed[0].status == "passing"
    del checks[("node", "service:svc00000")]
    delta = kept.update(answer(checks, True))
    assert [r.check_id for r in delta.removed] == ["service:svc00000"] and not delta.added


@pytest.mark.parametrize("body", [b"", b"{}", b"[1]", b'[{"Node": 5}]', b'[{"ModifyIndex": "7"}]', b"[{", b"null"])
def test_an_answer_that_is_not_a_list_of_checks_is_refused_and_the_last_one_kept(body):
    kept = CheckList()
    good = answer({("a", "c1"): {"Status": "passing", "ServiceName": "web", "Output": "", "ModifyIndex": 3}}, True)
    kept.update(good)
    with pytest.raises(ValueError, match="not a list of checks"):
        kept.update(body)
    assert [r.check_id for r in kept.rows] == ["c1"]
    assert kept.update(good).empty, "still compared with the last good answer"


class SmallBlocks(_Sizes):
    BLOCK = 3   # so that a few rows already span several blocks


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 9), max_size=20),
       st.lists(st.tuples(st.integers(0, 25), st.integers(0, 25), st.lists(st.integers(1, 9), max_size=8)), max_size=10))
def test_row_sizes_kept_in_blocks_place_every_row_where_the_plain_sums_do(lengths, edits):
    sizes, plain = SmallBlocks(lengths), [length + 1 for length in lengths]
    for first, last, new in [(0, 0, [])] + edits:
        first = min(first, len(plain))
        last = min(max(first, last), len(plain))
        sizes.replace(first, last, new)
        plain[first:last] = [length + 1 for length in new]
        assert sizes.total() == (1 + sum(plain) if plain else 2)
        assert [sizes.before(k) for k in range(len(plain) + 1)] == [sum(plain[:k]) for k in range(len(plain) + 1)]
        for total in range(-1, sum(plain) + 3):
            expected = next((k for k in range(len(plain) + 1) if sum(plain[:k]) >= total), len(plain) + 1)
            assert sizes.first_reaching(total) == expected
