"""inventory: stock per product, and reservations that hold stock while an order is paid.

A reservation is `held` (stock taken from `available`), then `committed` (sold) or
`released` (stock given back). Creating a reservation with an id that exists returns the
existing one, so the orders service may retry safely; release and commit are idempotent.
"""

from __future__ import annotations

import sqlite3

from flask import Blueprint, jsonify, request

from services.app import ServiceContext, ServiceSpec
from services.validation import InputError, found, json_object, path_int, positive_int, text

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    product_id INTEGER PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0),
    reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    product_id INTEGER NOT NULL REFERENCES stock (product_id),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    status TEXT NOT NULL CHECK (status IN ('held', 'committed', 'released')),
    created_at TEXT NOT NULL DEFAULT (datetime('now')),
    updated_at TEXT NOT NULL DEFAULT (datetime('now'))
)
"""

#: (product_id, units available) for the seeded products 1..6.
SEED_STOCK = [(1, 100), (2, 250), (3, 80), (4, 20), (5, 10), (6, 5)]

MAX_QUANTITY = 1000
STOCK_COLUMNS = "product_id, available, reserved"
RESERVATION_COLUMNS = "id, product_id, quantity, status, created_at, updated_at"

#: target status -> (status it may come from, change to available, change to reserved)
TRANSITIONS = {
    "released": ("held", +1, -1),
    "committed": ("held", 0, -1),
}


def seed(conn: sqlite3.Connection) -> None:
    conn.executemany("INSERT INTO stock (product_id, available) VALUES (?, ?)", SEED_STOCK)


def routes(ctx: ServiceContext) -> Blueprint:
    bp = Blueprint("inventory", __name__)

    def reservation(conn: sqlite3.Connection, reservation_id: str) -> dict | None:
        row = conn.execute(f"SELECT {RESERVATION_COLUMNS} FROM reservations WHERE id = ?", (reservation_id,)).fetchone()
        return dict(row) if row is not None else None

    @bp.get("")
    def list_stock():
        return jsonify(ctx.store.query(f"SELECT {STOCK_COLUMNS} FROM stock ORDER BY product_id"))

    @bp.get("/<raw_id>")
    def get_stock(raw_id: str):
        product_id = path_int(raw_id, "product_id")
        row = ctx.store.query_one(f"SELECT {STOCK_COLUMNS} FROM stock WHERE product_id = ?", (product_id,))
        return jsonify(found(row, f"no stock record for product {product_id}", "product_id"))

    @bp.post("/reservations")
    def reserve():
        body = json_object(request)
        reservation_id = text(body, "reservation_id", max_length=100)
        product_id = positive_int(body, "product_id")
        quantity = positive_int(body, "quantity", maximum=MAX_QUANTITY)
        with ctx.store.transaction() as tx:
            existing = reservation(tx, reservation_id)
            if existing is not None:
                if (existing["product_id"], existing["quantity"]) != (product_id, quantity):
                    raise InputError(f"reservation {reservation_id} exists for a different product or quantity",
                                     "reservation_id", status=409)
                return jsonify(existing), 200
            stock = tx.execute("SELECT available FROM stock WHERE product_id = ?", (product_id,)).fetchone()
            if stock is None:
                raise InputError(f"no stock record for product {product_id}", "product_id", status=404)
            if stock["available"] < quantity:
                raise InputError(f"insufficient stock for product {product_id}: "
                                 f"{stock['available']} available, {quantity} requested", "quantity", status=409)
            tx.execute("UPDATE stock SET available = available - ?, reserved = reserved + ? WHERE product_id = ?",
                       (quantity, quantity, product_id))
            tx.execute("INSERT INTO reservations (id, product_id, quantity, status) VALUES (?, ?, ?, 'held')",
                       (reservation_id, product_id, quantity))
            created = reservation(tx, reservation_id)
        return jsonify(created), 201, {"Location": f"/api/v1/inventory/reservations/{reservation_id}"}

    @bp.get("/reservations/<reservation_id>")
    def get_reservation(reservation_id: str):
        row = reservation(ctx.store.connection(), reservation_id)
        return jsonify(found(row, f"reservation {reservation_id} not found", "reservation_id"))

    @bp.post("/reservations/<reservation_id>/<action>")
    def settle(reservation_id: str, action: str):
        target = {"release": "released", "commit": "committed"}.get(action)
        if target is None:
            raise InputError(f"unknown action {action!r}: use release or commit", status=404)
        source, available_sign, reserved_sign = TRANSITIONS[target]
        with ctx.store.transaction() as tx:
            current = found(reservation(tx, reservation_id), f"reservation {reservation_id} not found",
                            "reservation_id")
            if current["status"] == target:
                return jsonify(current)
            if current["status"] != source:
                raise InputError(f"reservation {reservation_id} is {current['status']}, cannot {action} it",
                                 "reservation_id", status=409)
            quantity = current["quantity"]
            tx.execute("UPDATE stock SET available = available + ?, reserved = reserved + ? WHERE product_id = ?",
                       (available_sign * quantity, reserved_sign * quantity, current["product_id"]))
            tx.execute("UPDATE reservations SET status = ?, updated_at = datetime('now') WHERE id = ?",
                       (target, reservation_id))
            updated = reservation(tx, reservation_id)
        return jsonify(updated)

    return bp


SERVICE = ServiceSpec(name="inventory", schema=SCHEMA, seed=seed, routes=routes)
