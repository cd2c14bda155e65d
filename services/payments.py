"""payments: charges through a simulated card provider, never charging twice for one key.

The simulated provider decides deterministically, so tests and demos can make a payment fail:
- payment method `pm_card_chargeDeclined` is always declined ("card declined");
- an amount above PAYMENT_LIMIT_CENTS (1000.00) is declined ("amount exceeds limit").
Everything else is approved. `SHOPGATE_PAYMENT_LATENCY` (seconds, default 0) makes the
provider slow, to show in-flight requests surviving a drain.

A charge sent with an `Idempotency-Key` header is recorded under that key: a retry with the
same key and body returns the original result (header `Idempotent-Replayed: true`) and
charges nothing; the same key with a different body is refused with 422.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time

from flask import Blueprint, Response, jsonify, request

from services.app import ServiceContext, ServiceSpec
from services.validation import InputError, found, idempotency_key, json_object, path_int, positive_int, text

PAYMENT_LIMIT_CENTS = 100_000
DECLINED_METHOD = "pm_card_chargeDeclined"
LATENCY_ENV = "SHOPGATE_PAYMENT_LATENCY"
LIST_LIMIT = 200  # GET /api/v1/payments: the newest charges only, so the list stays cheap

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT UNIQUE,
    request_fingerprint TEXT NOT NULL,
    order_id TEXT NOT NULL,
    user_id INTEGER NOT NULL,
    amount_cents INTEGER NOT NULL,
    payment_method TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('approved', 'declined')),
    decline_reason TEXT,
    created_at TEXT NOT NULL DEFAULT (datetime('now'))
)
"""

COLUMNS = "id, order_id, user_id, amount_cents, payment_method, status, decline_reason, idempotency_key, created_at"


def seed(conn: sqlite3.Connection) -> None:
    """No payments before the first order."""


def decide(amount_cents: int, payment_method: str) -> str | None:
    """The simulated provider: None if approved, else the reason for the decline."""
    if payment_method == DECLINED_METHOD:
        return "card declined"
    if amount_cents > PAYMENT_LIMIT_CENTS:
        return f"amount exceeds limit of {PAYMENT_LIMIT_CENTS / 100:.2f}"
    return None


def provider_latency() -> float:
    raw = os.environ.get(LATENCY_ENV, "0")
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise SystemExit(f"{LATENCY_ENV} must be a number of seconds, got {raw!r}") from None


def answer(payment: dict, replayed: bool = False) -> tuple[Response, int, dict[str, str]]:
    """The response for a recorded payment: 201 approved, 402 declined."""
    headers = {"Location": f"/api/v1/payments/{payment['id']}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if payment["status"] == "approved":
        return jsonify(payment), 201, headers
    return jsonify(error=f"payment declined: {payment['decline_reason']}", payment=payment), 402, headers


def routes(ctx: ServiceContext) -> Blueprint:
    bp = Blueprint("payments", __name__)
    latency = provider_latency()

    def by_key(key: str) -> dict | None:
        return ctx.store.query_one(f"SELECT {COLUMNS}, request_fingerprint FROM payments WHERE idempotency_key = ?", (key,))

    def replay(existing: dict, fingerprint: str):
        if existing.pop("request_fingerprint") != fingerprint:
            raise InputError("Idempotency-Key was already used for a different payment", "Idempotency-Key", status=422)
        return answer(existing, replayed=True)

    @bp.get("")
    def list_payments():
        order_id = request.args.get("order_id")
        if order_id is None:
            return jsonify(ctx.store.query(f"SELECT {COLUMNS} FROM payments ORDER BY id DESC LIMIT {LIST_LIMIT}"))
        return jsonify(ctx.store.query(f"SELECT {COLUMNS} FROM payments WHERE order_id = ? ORDER BY id", (order_id,)))

    @bp.get("/<raw_id>")
    def get_payment(raw_id: str):
        payment_id = path_int(raw_id, "payment_id")
        payment = ctx.store.query_one(f"SELECT {COLUMNS} FROM payments WHERE id = ?", (payment_id,))
        return jsonify(found(payment, f"payment {payment_id} not found", "payment_id"))

    @bp.post("")
    def charge():
        body = json_object(request)
        order_id = text(body, "order_id", max_length=100)
        user_id = positive_int(body, "user_id")
        amount_cents = positive_int(body, "amount_cents")
        payment_method = text(body, "payment_method", max_length=100)
        key = idempotency_key(request)
        fingerprint = hashlib.sha256(
            json.dumps([order_id, user_id, amount_cents, payment_method]).encode()
        ).hexdigest()
        if key is not None and (existing := by_key(key)) is not None:
            return replay(existing, fingerprint)

        time.sleep(latency)  # the provider thinks
        reason = decide(amount_cents, payment_method)
        try:
            with ctx.store.transaction() as tx:
                cursor = tx.execute(
                    "INSERT INTO payments (idempotency_key, request_fingerprint, order_id, user_id, amount_cents,"
                    " payment_method, status, decline_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, fingerprint, order_id, user_id, amount_cents, payment_method,
                     "declined" if reason else "approved", reason),
                )
        except sqlite3.IntegrityError:  # a concurrent request with the same key won the race
            return replay(by_key(key), fingerprint)
        payment = ctx.store.query_one(f"SELECT {COLUMNS} FROM payments WHERE id = ?", (cursor.lastrowid,))
        return answer(payment)

    return bp


SERVICE = ServiceSpec(name="payments", schema=SCHEMA, seed=seed, routes=routes)
