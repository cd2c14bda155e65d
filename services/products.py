"""products: what the shop sells and its price (integer cents, never floats)."""

from __future__ import annotations

import sqlite3

from flask import Blueprint, jsonify

from services.app import ServiceContext, ServiceSpec
from services.validation import found, path_int

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sku TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents > 0)
)
"""

#: (sku, name, price in cents); product ids 1..6 in this order. Stock lives in the inventory service.
SEED_PRODUCTS = [
    ("KB-01", "Mechanical keyboard", 8900),
    ("MS-02", "Wireless mouse", 2900),
    ("HUB-03", "USB-C hub", 4500),
    ("MON-04", "27-inch monitor", 32900),
    ("DSK-05", "Standing desk", 59900),
    ("CHR-06", "Ergonomic chair", 124900),
]

COLUMNS = "id, sku, name, price_cents"


def seed(conn: sqlite3.Connection) -> None:
    conn.executemany("INSERT INTO products (sku, name, price_cents) VALUES (?, ?, ?)", SEED_PRODUCTS)


def routes(ctx: ServiceContext) -> Blueprint:
    bp = Blueprint("products", __name__)

    @bp.get("")
    def list_products():
        return jsonify(ctx.store.query(f"SELECT {COLUMNS} FROM products ORDER BY id"))

    @bp.get("/<raw_id>")
    def get_product(raw_id: str):
        product_id = path_int(raw_id, "product_id")
        product = ctx.store.query_one(f"SELECT {COLUMNS} FROM products WHERE id = ?", (product_id,))
        return jsonify(found(product, f"product {product_id} not found", "product_id"))

    return bp


SERVICE = ServiceSpec(name="products", schema=SCHEMA, seed=seed, routes=routes)
