"""Pure request parsing: Go durations, Consul's case-insensitive JSON, query flags, filter expressions."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from catalog.filtering import apply_filter
from catalog.parsing import BadRequest, Fields, Query, format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("10s", 10), ("1m30s", 90), ("60000ms", 60), ("1.5h", 5400), ("250ms", 0.25), ("0", 0), ("2h45m0.5s", 9900.5),
    (5_000_000_000, 5),  # a JSON number is nanoseconds, as Go's time.Duration
])
def test_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "ten seconds", "5x", "-1s", "1s ", "s", True, [1], "300y", "3000000h",
                                  1e300])
def test_bad_durations_are_refused(text):
    with pytest.raises(BadRequest):
        parse_duration(text)


@pytest.mark.parametrize("seconds, text", [(10, "10s"), (90, "1m30s"), (0.1, "100ms"), (3600, "1h0m0s")])
def test_durations_are_echoed_in_go_form(seconds, text):
    assert format_duration(seconds) == text


def test_json_keys_match_case_insensitively_and_in_snake_case():
    fields = Fields({"name": "web", "TAGGED_ADDRESSES": {"lan": {}}, "enabletagoverride": True}, "service")
    assert fields.text("Name") == "web"
    assert fields.has("TaggedAddresses")
    assert fields.flag("EnableTagOverride") is True
    with pytest.raises(BadRequest, match="service: Name must be an integer"):
        fields.integer("Name")


def test_presence_flags_and_blocking_parameters():
    query = Query(MultiDict([("recurse", ""), ("passing", ""), ("index", "42"), ("wait", "1h"), ("tag", "a"),
                             ("tag", "b")]))
    assert query.present("recurse") and query.truthy("passing")
    assert query.blocking() == (42, 600.0)  # the wait is capped at 10 minutes, as Consul caps it
    assert query.getall("tag") == ["a", "b"]
    assert Query(MultiDict()).blocking() == (0, 300.0)
    with pytest.raises(BadRequest, match="Cannot specify"):
        Query(MultiDict([("stale", ""), ("consistent", "")])).consistency()


@pytest.mark.parametrize("index", ["¹", "٣", "-1", "1.5"])
def test_an_index_that_is_not_ascii_digits_is_a_400(index):
    """'¹'.isdigit() is true but int('¹') fails: such an index must be refused, not crash the request."""
    with pytest.raises(BadRequest, match="Invalid index"):
        Query(MultiDict([("index", index)])).blocking()
    with pytest.raises(BadRequest):
        Query(MultiDict([("limit", index)])).uint("limit")


ROWS = [
    {"Node": "n1", "ServiceTags": ["prod", "v1"], "ServicePort": 80, "ServiceMeta": {"team": "shop"},
     "Service": {"Tags": ["prod"]}, "Enabled": True},
    {"Node": "n2", "ServiceTags": [], "ServicePort": 8080, "ServiceMeta": {}, "Service": {"Tags": []},
     "Enabled": False},
]


@pytest.mark.parametrize("expression, nodes", [
    ('Node == "n1"', ["n1"]),
    ("Node != `n1`", ["n2"]),
    ('"prod" in ServiceTags', ["n1"]),
    ('"prod" not in ServiceTags', ["n2"]),
    ("ServiceTags is empty", ["n2"]),
    ("ServiceTags is not empty", ["n1"]),
    ("ServicePort == 8080", ["n2"]),
    ("Enabled == true", ["n1"]),
    ("ServiceMeta.team == shop", ["n1"]),
    ('ServiceMeta["team"] == "shop"', ["n1"]),
    ('"prod" in Service.Tags', ["n1"]),
    ('Node matches "^n[0-9]$" and not (ServicePort == 80)', ["n2"]),
    ('Node == "n1" or ServiceTags contains "nope"', ["n1"]),
])
def test_filter_expressions(expression, nodes):
    assert [row["Node"] for row in apply_filter(ROWS, expression)] == nodes


@pytest.mark.parametrize("expression", ["not a valid expression((", "Node ==", "Node = 1", '"x" in', "(Node == a"])
def test_malformed_filters_are_400s_even_on_empty_results(expression):
    with pytest.raises(BadRequest, match="Failed to create boolean expression evaluator"):
        apply_filter([], expression)
