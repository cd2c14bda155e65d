"""The order flow end to end: five real service processes that find each other through the catalog.

One catalog and one instance of each service for the whole module (the `shop` fixture).
Tests measure changes (stock before/after), so their order does not matter.
"""

from __future__ import annotations

import uuid

import pytest
import requests

from shopgate.processes import free_port

TIMEOUT = 15


def get(shop, service: str, path: str = "") -> requests.Response:
    return send(shop, "GET", service, path)


def send(shop, method: str, service: str, path: str, body: str | None = None) -> requests.Response:
    return requests.request(method, f"{shop.url(service)}/api/v1/{service}{path}", data=body, timeout=TIMEOUT,
                            headers={"Content-Type": "application/json"})


def place_order(shop, user_id: int, product_id: int, quantity: int, key: str | None = None) -> requests.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return requests.post(f"{shop.url('orders')}/api/v1/orders", timeout=TIMEOUT, headers=headers,
                         json={"user_id": user_id, "product_id": product_id, "quantity": quantity})


def available(shop, product_id: int) -> int:
    return get(shop, "inventory", f"/{product_id}").json()["available"]


def charges_for(shop, order_id: str) -> list[dict]:
    return requests.get(f"{shop.url('payments')}/api/v1/payments", params={"order_id": order_id},
                        timeout=TIMEOUT).json()


@pytest.mark.parametrize("service", ["users", "products", "inventory", "orders", "payments"])
def test_every_service_lists_its_resource_and_names_the_instance(shop, service):
    answer = get(shop, service)
    assert answer.status_code == 200
    assert isinstance(answer.json(), list)
    assert answer.headers["X-Instance"] == shop.instances[service].id
    health = requests.get(f"{shop.url(service)}/health", timeout=TIMEOUT)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_seeded_products_have_ids_prices_and_stock(shop):
    products = get(shop, "products").json()
    assert [p["id"] for p in products] == [1, 2, 3, 4, 5, 6]
    assert all(isinstance(p["price_cents"], int) and p["price_cents"] > 0 for p in products)
    assert {row["product_id"] for row in get(shop, "inventory").json()} == {1, 2, 3, 4, 5, 6}


def test_order_is_confirmed_paid_and_takes_stock(shop):
    before = available(shop, 1)
    answer = place_order(shop, user_id=1, product_id=1, quantity=2)

    assert answer.status_code == 201, answer.text
    order = answer.json()
    assert order["status"] == "confirmed"
    assert order["amount_cents"] == 2 * get(shop, "products", "/1").json()["price_cents"]
    assert get(shop, "orders", f"/{order['id']}").json() == order
    assert available(shop, 1) == before - 2
    [charge] = charges_for(shop, order["id"])
    assert (charge["status"], charge["amount_cents"], charge["id"]) == ("approved", order["amount_cents"], order["payment_id"])
    reservation = get(shop, "inventory", f"/reservations/{order['id']}").json()
    assert reservation["status"] == "committed"


def test_declined_card_releases_the_reservation(shop):
    before = available(shop, 2)
    answer = place_order(shop, user_id=3, product_id=2, quantity=4)  # user 3 pays with pm_card_chargeDeclined

    assert answer.status_code == 402, answer.text
    body = answer.json()
    assert "card declined" in body["error"]
    order = body["order"]
    assert order["status"] == "payment_failed"
    assert available(shop, 2) == before, "the reserved stock must come back"
    assert get(shop, "inventory", f"/reservations/{order['id']}").json()["status"] == "released"
    assert [c["status"] for c in charges_for(shop, order["id"])] == ["declined"]
    assert get(shop, "orders", f"/{order['id']}").json()["status"] == "payment_failed"


def test_amount_over_the_provider_limit_is_declined_and_rolled_back(shop):
    before = available(shop, 6)
    answer = place_order(shop, user_id=2, product_id=6, quantity=1)  # 1249.00 > 1000.00

    assert answer.status_code == 402, answer.text
    assert "exceeds limit" in answer.json()["error"]
    assert available(shop, 6) == before


def test_not_enough_stock_is_a_conflict_and_charges_nothing(shop):
    before = available(shop, 5)
    answer = place_order(shop, user_id=1, product_id=5, quantity=before + 1)

    assert answer.status_code == 409, answer.text
    assert "insufficient stock" in answer.json()["error"]
    assert available(shop, 5) == before
    assert charges_for(shop, answer.json()["order"]["id"]) == []


def test_retry_with_the_same_idempotency_key_charges_once(shop):
    key = f"test-{uuid.uuid4()}"
    before = available(shop, 3)

    first = place_order(shop, user_id=2, product_id=3, quantity=1, key=key)
    retry = place_order(shop, user_id=2, product_id=3, quantity=1, key=key)

    assert first.status_code == retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]
    assert retry.headers.get("Idempotent-Replayed") == "true"
    assert len(charges_for(shop, first.json()["id"])) == 1
    assert available(shop, 3) == before - 1
    reused = place_order(shop, user_id=2, product_id=3, quantity=2, key=key)
    assert reused.status_code == 422 and "Idempotency-Key" in reused.json()["error"]


def test_payments_replays_a_charge_for_the_same_key(shop):
    url = f"{shop.url('payments')}/api/v1/payments"
    body = {"order_id": f"ord_{uuid.uuid4().hex[:16]}", "user_id": 1, "amount_cents": 1234, "payment_method": "pm_card_visa"}
    headers = {"Idempotency-Key": f"test-{uuid.uuid4()}"}

    first = requests.post(url, json=body, headers=headers, timeout=TIMEOUT)
    again = requests.post(url, json=body, headers=headers, timeout=TIMEOUT)

    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert len(charges_for(shop, body["order_id"])) == 1


def test_orders_retry_another_instance_when_one_is_unreachable(shop):
    """A payments instance that the catalog believes healthy but that refuses connections."""
    consul = shop.catalog.client()
    dead_port = free_port()
    dead_id = f"payments-{dead_port}"
    consul.agent.service.register("payments", service_id=dead_id, address="127.0.0.1", port=dead_port,
                                  check={"TTL": "60s", "Status": "passing"})
    try:
        consul.agent.check.ttl_pass(f"service:{dead_id}")
        _, entries = consul.health.service("payments", passing=True)
        assert dead_id in {e["Service"]["ID"] for e in entries}

        answers = [place_order(shop, user_id=1, product_id=2, quantity=1) for _ in range(6)]

        assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    finally:
        consul.agent.service.deregister(dead_id)


def test_data_survives_a_restart(shop):
    users = shop.instances["users"]
    created = requests.post(f"{users.url}/api/v1/users", timeout=TIMEOUT,
                            json={"name": "Barbara Liskov", "email": f"barbara-{uuid.uuid4().hex[:8]}@example.com"})
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    count = len(get(shop, "users").json())

    assert users.stop() == 0
    users.port = free_port()
    users.id = f"users-{users.port}"
    users.start()

    again = requests.get(f"{users.url}/api/v1/users/{user_id}", timeout=TIMEOUT)
    assert again.status_code == 200 and again.json()["name"] == "Barbara Liskov"
    assert len(get(shop, "users").json()) == count, "seeding must happen once, not on every start"


# --- bad input on every endpoint: (method, service, path, body, expected status, words in the error) ---
MALFORMED = '{"user_id": 1,'
BAD_INPUT = [
    ("GET", "users", "/abc", None, 400, "user_id must be a positive integer"),
    ("GET", "users", "/0", None, 400, "user_id must be a positive integer"),
    ("GET", "users", "/999", None, 404, "user 999 not found"),
    ("POST", "users", "", MALFORMED, 400, "not valid JSON"),
    ("POST", "users", "", "", 400, "body is empty"),
    ("POST", "users", "", '["Ada"]', 400, "must be a JSON object"),
    ("POST", "users", "", '{"email": "x@example.com"}', 400, "missing field: name"),
    ("POST", "users", "", '{"name": 7, "email": "x@example.com"}', 400, "name must be a string"),
    ("POST", "users", "", '{"name": "  ", "email": "x@example.com"}', 400, "name must not be empty"),
    ("POST", "users", "", '{"name": "X", "email": "nope"}', 400, "email must look like"),
    ("POST", "users", "", '{"name": "X", "email": "ada@example.com"}', 409, "already exists"),
    ("DELETE", "users", "", None, 405, "Method Not Allowed"),
    ("GET", "products", "/x1", None, 400, "product_id must be a positive integer"),
    ("GET", "products", "/999", None, 404, "product 999 not found"),
    ("GET", "products", "/1/extra", None, 404, "Not Found"),
    ("GET", "inventory", "/abc", None, 400, "product_id must be a positive integer"),
    ("GET", "inventory", "/999", None, 404, "no stock record for product 999"),
    ("POST", "inventory", "/reservations", MALFORMED, 400, "not valid JSON"),
    ("POST", "inventory", "/reservations", '{"product_id": 1, "quantity": 1}', 400, "missing field: reservation_id"),
    ("POST", "inventory", "/reservations", '{"reservation_id": "r", "product_id": "1", "quantity": 1}', 400,
     "product_id must be an integer, got string"),
    ("POST", "inventory", "/reservations", '{"reservation_id": "r", "product_id": 1, "quantity": 0}', 400,
     "quantity must be at least 1"),
    ("POST", "inventory", "/reservations", '{"reservation_id": "r", "product_id": 1, "quantity": 5000}', 400,
     "quantity must be at most 1000"),
    ("POST", "inventory", "/reservations", '{"reservation_id": "r", "product_id": 999, "quantity": 1}', 404,
     "no stock record for product 999"),
    ("GET", "inventory", "/reservations/nope", None, 404, "reservation nope not found"),
    ("POST", "inventory", "/reservations/nope/release", None, 404, "reservation nope not found"),
    ("POST", "inventory", "/reservations/nope/commit", None, 404, "reservation nope not found"),
    ("POST", "inventory", "/reservations/nope/explode", None, 404, "unknown action"),
    ("GET", "payments", "/abc", None, 400, "payment_id must be a positive integer"),
    ("GET", "payments", "/99999", None, 404, "payment 99999 not found"),
    ("POST", "payments", "", MALFORMED, 400, "not valid JSON"),
    ("POST", "payments", "", '{"order_id": "o", "user_id": 1, "payment_method": "pm_card_visa"}', 400,
     "missing field: amount_cents"),
    ("POST", "payments", "", '{"order_id": "o", "user_id": 1, "amount_cents": -5, "payment_method": "pm_card_visa"}',
     400, "amount_cents must be at least 1"),
    ("POST", "payments", "", '{"order_id": "o", "user_id": 1, "amount_cents": 9.99, "payment_method": "pm_card_visa"}',
     400, "amount_cents must be an integer, got number"),
    ("POST", "payments", "", '{"order_id": "o", "user_id": 1, "amount_cents": 5, "payment_method": null}', 400,
     "missing field: payment_method"),
    ("GET", "orders", "/nope", None, 400, "order id must look like"),
    ("GET", "orders", "/ord_0000000000000000", None, 404, "order ord_0000000000000000 not found"),
    ("POST", "orders", "", MALFORMED, 400, "not valid JSON"),
    ("POST", "orders", "", "42", 400, "must be a JSON object, got int"),
    ("POST", "orders", "", '{"user_id": 1, "product_id": 1}', 400, "missing field: quantity"),
    ("POST", "orders", "", '{"user_id": "1", "product_id": 1, "quantity": 1}', 400, "user_id must be an integer, got string"),
    ("POST", "orders", "", '{"user_id": 1, "product_id": 1, "quantity": true}', 400, "quantity must be an integer, got boolean"),
    ("POST", "orders", "", '{"user_id": 1, "product_id": 1, "quantity": 0}', 400, "quantity must be at least 1"),
    ("POST", "orders", "", '{"user_id": 999, "product_id": 1, "quantity": 1}', 404, "user 999 not found"),
    ("POST", "orders", "", '{"user_id": 1, "product_id": 999, "quantity": 1}', 404, "product 999 not found"),
    ("POST", "orders", "", '{"pad": "' + "x" * 70_000 + '"}', 413, "Request Entity Too Large"),
]


@pytest.mark.parametrize("method, service, path, body, status, words", BAD_INPUT,
                         ids=[f"{m} {s}{p} {b!r:.30}" for m, s, p, b, *_ in BAD_INPUT])
def test_bad_input_is_refused_with_a_clear_error(shop, method, service, path, body, status, words):
    answer = send(shop, method, service, path, body)

    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]
    assert answer.headers["X-Instance"] == shop.instances[service].id


def test_bad_input_changes_nothing(shop):
    stock = get(shop, "inventory").json()
    orders = get(shop, "orders").json()
    for method, service, path, body, *_ in BAD_INPUT:
        send(shop, method, service, path, body)
    assert get(shop, "inventory").json() == stock
    assert get(shop, "orders").json() == orders
