"""users: the shop's customers and the payment method each one pays with.

Payment methods use the simulated provider's test tokens (see services/payments.py):
`pm_card_visa` is approved, `pm_card_chargeDeclined` is always declined.
"""

from __future__ import annotations

import sqlite3

from flask import Blueprint, jsonify, request

from services.app import ServiceContext, ServiceSpec
from services.validation import InputError, found, json_object, path_int, text

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    payment_method TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (datetime('now'))
)
"""

SEED_USERS = [
    ("Ada Lovelace", "ada@example.com", "pm_card_visa"),
    ("Grace Hopper", "grace@example.com", "pm_card_visa"),
    ("Alan Turing", "alan@example.com", "pm_card_chargeDeclined"),
    ("Katherine Johnson", "katherine@example.com", "pm_card_visa"),
    ("Edsger Dijkstra", "edsger@example.com", "pm_card_visa"),
]

COLUMNS = "id, name, email, payment_method, created_at"


def seed(conn: sqlite3.Connection) -> None:
    conn.executemany("INSERT INTO users (name, email, payment_method) VALUES (?, ?, ?)", SEED_USERS)


def routes(ctx: ServiceContext) -> Blueprint:
    bp = Blueprint("users", __name__)

    @bp.get("")
    def list_users():
        return jsonify(ctx.store.query(f"SELECT {COLUMNS} FROM users ORDER BY id"))

    @bp.get("/<raw_id>")
    def get_user(raw_id: str):
        user_id = path_int(raw_id, "user_id")
        user = ctx.store.query_one(f"SELECT {COLUMNS} FROM users WHERE id = ?", (user_id,))
        return jsonify(found(user, f"user {user_id} not found", "user_id"))

    @bp.post("")
    def create_user():
        body = json_object(request)
        name = text(body, "name")
        email = text(body, "email", max_length=254)
        if "@" not in email[1:-1]:
            raise InputError(f"email must look like name@domain, got {email!r}", "email")
        payment_method = text(body, "payment_method", max_length=100, required=False, default="pm_card_visa")
        try:
            with ctx.store.transaction() as tx:
                cursor = tx.execute(
                    "INSERT INTO users (name, email, payment_method) VALUES (?, ?, ?)", (name, email, payment_method)
                )
        except sqlite3.IntegrityError:
            raise InputError(f"a user with email {email} already exists", "email", status=409) from None
        user = ctx.store.query_one(f"SELECT {COLUMNS} FROM users WHERE id = ?", (cursor.lastrowid,))
        return jsonify(user), 201, {"Location": f"/api/v1/users/{user['id']}"}

    return bp


SERVICE = ServiceSpec(name="users", schema=SCHEMA, seed=seed, routes=routes)
