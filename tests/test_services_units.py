"""The pure parts of the shop services: the simulated payment provider, catalog entries to
endpoints, and input validation — no processes."""

from __future__ import annotations

import pytest
from flask import Flask, request

from services.discovery import Endpoint, endpoints_from_health
from services.payments import PAYMENT_LIMIT_CENTS, decide
from services.validation import InputError, json_object, path_int, positive_int, text


@pytest.mark.parametrize("amount, method, declined_because", [
    (100, "pm_card_visa", None),
    (PAYMENT_LIMIT_CENTS, "pm_card_visa", None),
    (PAYMENT_LIMIT_CENTS + 1, "pm_card_visa", "amount exceeds limit of 1000.00"),
    (100, "pm_card_chargeDeclined", "card declined"),
])
def test_simulated_provider_decides_deterministically(amount, method, declined_because):
    assert decide(amount, method) == declined_because


def test_endpoints_use_the_service_address_or_else_the_nodes():
    entries = [
        {"Node": {"Address": "10.0.0.1"}, "Service": {"ID": "users-1", "Address": "10.0.0.9", "Port": 5001}},
        {"Node": {"Address": "10.0.0.2"}, "Service": {"ID": "users-2", "Address": "", "Port": 5002}},
        {"Node": {"Address": "10.0.0.3"}, "Service": {"ID": "users-3", "Address": "10.0.0.3", "Port": 0}},
    ]
    assert endpoints_from_health("users", entries) == [Endpoint("users-1", "10.0.0.9", 5001), Endpoint("users-2", "10.0.0.2", 5002)]
    assert Endpoint("x", "::1", 80).base_url == "http://[::1]:80"


def test_endpoints_are_only_those_of_the_callers_environment():
    entries = [
        {"Node": {"Address": "10.0.0.1"}, "Service": {"ID": "payments-1", "Port": 5001}},
        {"Node": {"Address": "10.0.0.1"}, "Service": {"ID": "payments-2", "Port": 5002, "Tags": ["env=staging"]}},
        {"Node": {"Address": "10.0.0.1"}, "Service": {"ID": "payments-3", "Port": 5003, "Meta": {"env": "staging"}}},
        {"Node": {"Address": "10.0.0.1"}, "Service": {"ID": "payments-4", "Port": 5004, "Tags": ["env=staging", "env=qa"]}},
    ]
    assert [e.id for e in endpoints_from_health("payments", entries)] == ["payments-1"]
    assert [e.id for e in endpoints_from_health("payments", entries, "staging")] == ["payments-2", "payments-3"]
    assert endpoints_from_health("payments", entries, "qa") == [], "an instance claiming two environments is in none"


@pytest.mark.parametrize("body, message", [
    ({}, "missing field: quantity"),
    ({"quantity": None}, "missing field: quantity"),
    ({"quantity": True}, "quantity must be an integer, got boolean true"),
    ({"quantity": "3"}, 'quantity must be an integer, got string "3"'),
    ({"quantity": 2.0}, "quantity must be an integer, got number 2.0"),
    ({"quantity": 0}, "quantity must be at least 1, got 0"),
    ({"quantity": 11}, "quantity must be at most 10, got 11"),
])
def test_positive_int_says_what_is_wrong(body, message):
    with pytest.raises(InputError) as caught:
        positive_int(body, "quantity", maximum=10)
    assert (caught.value.message, caught.value.field, caught.value.status) == (message, "quantity", 400)


def test_text_trims_and_defaults():
    assert text({"name": "  Ada "}, "name") == "Ada"
    assert text({}, "card", required=False, default="pm_card_visa") == "pm_card_visa"
    with pytest.raises(InputError, match="at most 3 characters"):
        text({"name": "Grace"}, "name", max_length=3)


@pytest.mark.parametrize("raw, ok", [("1", True), ("42", True), ("0", False), ("-1", False), ("1.5", False), ("", False),
                                     ("¹", False)])
def test_path_ids_are_positive_integers(raw, ok):
    if ok:
        assert path_int(raw, "user_id") == int(raw)
    else:
        with pytest.raises(InputError, match="user_id must be a positive integer"):
            path_int(raw, "user_id")


@pytest.mark.parametrize("raw, message", [
    (b"", "request body is empty"),
    (b"{", "request body is not valid JSON"),
    (b"\xff\xfe", "request body is not valid JSON"),
    (b"[1, 2]", "request body must be a JSON object, got list"),
])
def test_json_object_refuses_what_is_not_an_object(raw, message):
    with Flask(__name__).test_request_context(method="POST", data=raw):
        with pytest.raises(InputError, match=message):
            json_object(request)
