"""Where the Consul API is and which token to send, read the way the consul CLI reads them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from shopgate.settings import CATALOG_PORT, DEFAULT_CONSUL_ADDR


@dataclass(frozen=True)
class ConsulAddress:
    """`CONSUL_HTTP_ADDR` (host:port or a URL) and `CONSUL_HTTP_TOKEN`, parsed once."""

    scheme: str
    host: str
    port: int
    token: str | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @classmethod
    def parse(cls, addr: str | None = None, token: str | None = None) -> "ConsulAddress":
        """Parse `CONSUL_HTTP_ADDR`-style text: `host:port`, or a URL (the environment when not given)."""
        addr = addr or os.environ.get("CONSUL_HTTP_ADDR") or DEFAULT_CONSUL_ADDR
        token = token if token is not None else (os.environ.get("CONSUL_HTTP_TOKEN") or None)
        if "://" not in addr:
            addr = "http://" + addr
        parts = urlsplit(addr)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"CONSUL_HTTP_ADDR: cannot parse {addr!r} (expected host:port or http://host:port)")
        port = parts.port or (443 if parts.scheme == "https" else CATALOG_PORT)
        return cls(parts.scheme, parts.hostname, port, token)
