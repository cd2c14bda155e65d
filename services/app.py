"""The one app factory behind the five shop services.

A service is a `ServiceSpec`: its name, its SQLite schema and seed data, and a function
that builds its blueprint (mounted at `/api/v1/<name>`). The factory adds what every
service shares: `/health` (real readiness: the store answers), JSON errors, and the
`X-Instance` header that makes load balancing visible from outside.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Callable

from flask import Blueprint, Flask, jsonify
from werkzeug.exceptions import HTTPException

from services.discovery import PeerUnavailable, Peers
from services.store import Seeder, Store
from services.validation import InputError

log = logging.getLogger("shopgate.services")

#: Every request body is a small JSON object; anything bigger is refused with 413.
MAX_BODY_BYTES = 64 * 1024


@dataclass
class ServiceContext:
    """What a service's routes need at run time."""

    name: str
    instance_id: str
    store: Store
    peers: Peers


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    schema: str
    seed: Seeder
    routes: Callable[[ServiceContext], Blueprint]

    def api_prefix(self) -> str:
        return f"/api/v1/{self.name}"


def create_app(spec: ServiceSpec, context: ServiceContext) -> Flask:
    app = Flask(f"shopgate.{spec.name}")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.url_map.strict_slashes = False
    app.json.sort_keys = False
    app.register_blueprint(spec.routes(context), url_prefix=spec.api_prefix())

    @app.get("/health")
    def health():
        try:
            context.store.ping()
        except sqlite3.Error as exc:
            return jsonify(status="unavailable", service=spec.name, instance=context.instance_id, error=str(exc)), 503
        return jsonify(status="ok", service=spec.name, instance=context.instance_id)

    @app.after_request
    def name_the_instance(response):
        response.headers["X-Instance"] = context.instance_id
        return response

    @app.errorhandler(InputError)
    def input_error(exc: InputError):
        body = {"error": exc.message}
        if exc.field:
            body["field"] = exc.field
        return jsonify(body), exc.status

    @app.errorhandler(PeerUnavailable)
    def peer_unavailable(exc: PeerUnavailable):
        log.warning("%s", exc)
        return jsonify(error=str(exc)), 503

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=f"{exc.code} {exc.name}: {exc.description}"), exc.code

    @app.errorhandler(sqlite3.OperationalError)
    def store_busy(exc: sqlite3.OperationalError):
        log.error("store error: %s", exc)
        return jsonify(error=f"store unavailable: {exc}"), 503

    return app
