"""orders: the order flow across the other four services.

`POST /api/v1/orders` {"user_id", "product_id", "quantity"}:
  1. check the user (users) and the product (products) — unknown ids answer 404;
  2. record a pending order (under the `Idempotency-Key`, if one was sent);
  3. reserve stock (inventory; 409 when there is not enough);
  4. charge the user's payment method (payments, idempotency key `order-<order id>`);
  5. approved: commit the reservation, order `confirmed`, 201.
     declined: release the reservation, order `payment_failed`, 402 with the reason.
     payments unreachable: release the reservation, order `failed`, 503.
A retry with the same Idempotency-Key returns the recorded order and charges nothing.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import uuid

import requests
from flask import Blueprint, Response, jsonify, request

from services.app import ServiceContext, ServiceSpec
from services.discovery import PeerUnavailable
from services.validation import InputError, found, idempotency_key, json_object, positive_int

log = logging.getLogger("shopgate.orders")

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    idempotency_key TEXT UNIQUE,
    request_fingerprint TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    product_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    amount_cents INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'payment_failed', 'failed')),
    http_status INTEGER,
    failure_reason TEXT,
    payment_id INTEGER,
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    updated_at TEXT NOT NULL DEFAULT (datetime('now'))
)
"""

MAX_QUANTITY = 1000
LIST_LIMIT = 200  # GET /api/v1/orders: the newest orders only, so the list stays cheap
ORDER_ID = re.compile(r"^ord_[0-9a-f]{16}$")
COLUMNS = ("id, user_id, product_id, quantity, amount_cents, status, failure_reason, payment_id, "
           "idempotency_key, created_at, updated_at")


def seed(conn: sqlite3.Connection) -> None:
    """No orders before the first customer."""


def new_order_id() -> str:
    return f"ord_{uuid.uuid4().hex[:16]}"


def error_of(response: requests.Response) -> str:
    """The `error` text of another service's JSON error, else the start of its body."""
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def answer(order: dict, http_status: int, replayed: bool = False) -> tuple[Response, int, dict[str, str]]:
    headers = {"Location": f"/api/v1/orders/{order['id']}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if http_status < 300:
        return jsonify(order), http_status, headers
    return jsonify(error=order["failure_reason"], order=order), http_status, headers


def routes(ctx: ServiceContext) -> Blueprint:
    bp = Blueprint("orders", __name__)
    peers = ctx.peers

    def load(order_id: str, with_private: bool = False) -> dict | None:
        extra = ", request_fingerprint, http_status" if with_private else ""
        return ctx.store.query_one(f"SELECT {COLUMNS}{extra} FROM orders WHERE id = ?", (order_id,))

    def finish(order_id: str, status: str, http_status: int, reason: str | None = None, payment_id: int | None = None):
        with ctx.store.transaction() as tx:
            tx.execute("UPDATE orders SET status = ?, http_status = ?, failure_reason = ?, payment_id = ?,"
                       " updated_at = datetime('now') WHERE id = ?", (status, http_status, reason, payment_id, order_id))
        return answer(load(order_id), http_status)

    def replay(key: str, fingerprint: str):
        existing = ctx.store.query_one(f"SELECT {COLUMNS}, request_fingerprint, http_status FROM orders"
                                       " WHERE idempotency_key = ?", (key,))
        if existing is None:
            return None
        if existing.pop("request_fingerprint") != fingerprint:
            raise InputError("Idempotency-Key was already used for a different order", "Idempotency-Key", status=422)
        http_status = existing.pop("http_status")
        if existing["status"] == "pending":
            raise InputError(f"order {existing['id']} for this Idempotency-Key is still in progress",
                             "Idempotency-Key", status=409)
        return answer(existing, http_status, replayed=True)

    def fetch(service: str, path: str, field: str, what: str) -> dict:
        response = peers.request(service, "GET", path)
        if response.status_code == 404:
            raise InputError(f"{what} not found", field, status=404)
        if response.status_code != 200:
            raise PeerUnavailable(service, f"GET {path} answered {response.status_code}")
        return response.json()

    def release(order_id: str) -> None:
        """Give the reserved stock back (idempotent; no reservation = nothing to give back)."""
        try:
            response = peers.request("inventory", "POST", f"/api/v1/inventory/reservations/{order_id}/release")
            if response.status_code not in (200, 404):
                log.error("release of reservation %s answered %s: %s", order_id, response.status_code, response.text)
        except PeerUnavailable as exc:
            log.error("reservation %s not released: %s", order_id, exc)

    def charge(order_id: str, user_id: int, amount_cents: int, payment_method: str) -> requests.Response:
        """Charge once: a second attempt after a lost answer reuses the idempotency key, so it
        returns the first attempt's result instead of charging again."""
        request_args = dict(headers={"Idempotency-Key": f"order-{order_id}"},
                            json={"order_id": order_id, "user_id": user_id, "amount_cents": amount_cents,
                                  "payment_method": payment_method})
        try:
            return peers.request("payments", "POST", "/api/v1/payments", **request_args)
        except PeerUnavailable as exc:
            log.warning("charge for %s: %s; asking again with the same idempotency key", order_id, exc)
            return peers.request("payments", "POST", "/api/v1/payments", **request_args)

    @bp.get("")
    def list_orders():
        return jsonify(ctx.store.query(f"SELECT {COLUMNS} FROM orders ORDER BY rowid DESC LIMIT {LIST_LIMIT}"))

    @bp.get("/<order_id>")
    def get_order(order_id: str):
        if not ORDER_ID.match(order_id):
            raise InputError(f"order id must look like ord_<16 hex digits>, got {order_id!r}", "order_id")
        return jsonify(found(load(order_id), f"order {order_id} not found", "order_id"))

    @bp.post("")
    def place_order():
        body = json_object(request)
        user_id = positive_int(body, "user_id")
        product_id = positive_int(body, "product_id")
        quantity = positive_int(body, "quantity", maximum=MAX_QUANTITY)
        key = idempotency_key(request)
        fingerprint = f"{user_id}:{product_id}:{quantity}"
        if key is not None and (replayed := replay(key, fingerprint)) is not None:
            return replayed

        user = fetch("users", f"/api/v1/users/{user_id}", "user_id", f"user {user_id}")
        product = fetch("products", f"/api/v1/products/{product_id}", "product_id", f"product {product_id}")
        amount_cents = product["price_cents"] * quantity
        order_id = new_order_id()
        try:
            with ctx.store.transaction() as tx:
                tx.execute("INSERT INTO orders (id, idempotency_key, request_fingerprint, user_id, product_id, quantity,"
                           " amount_cents, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')",
                           (order_id, key, fingerprint, user_id, product_id, quantity, amount_cents))
        except sqlite3.IntegrityError:  # a concurrent request with the same key won the race
            return replay(key, fingerprint)

        try:
            reserved = peers.request("inventory", "POST", "/api/v1/inventory/reservations",
                                     json={"reservation_id": order_id, "product_id": product_id, "quantity": quantity})
        except PeerUnavailable as exc:
            release(order_id)  # the reservation may have been made before the answer was lost
            return finish(order_id, "failed", 503, str(exc))
        if reserved.status_code not in (200, 201):
            return finish(order_id, "failed", 409 if reserved.status_code in (404, 409) else 502,
                          f"inventory: {error_of(reserved)}")

        try:
            charged = charge(order_id, user_id, amount_cents, user["payment_method"])
        except PeerUnavailable as exc:
            release(order_id)
            return finish(order_id, "failed", 503, str(exc))
        if charged.status_code == 402:
            release(order_id)
            return finish(order_id, "payment_failed", 402, charged.json()["error"], charged.json()["payment"]["id"])
        if charged.status_code != 201:
            release(order_id)
            return finish(order_id, "failed", 502, f"payments answered {charged.status_code}: {error_of(charged)}")

        payment_id = charged.json()["id"]
        try:
            committed = peers.request("inventory", "POST", f"/api/v1/inventory/reservations/{order_id}/commit")
            if committed.status_code != 200:
                log.error("commit of reservation %s answered %s", order_id, committed.status_code)
        except PeerUnavailable as exc:  # paid: the order stands; the reservation stays held
            log.error("reservation %s not committed: %s", order_id, exc)
        return finish(order_id, "confirmed", 201, payment_id=payment_id)

    return bp


SERVICE = ServiceSpec(name="orders", schema=SCHEMA, seed=seed, routes=routes)
