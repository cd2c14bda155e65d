"""What text from the catalog or KV may reach haproxy.cfg: the allowed shapes, checked in one place.

HAProxy's config parser splits words on blanks, starts a comment at '#', interprets quotes,
backslashes and "${VAR}" and ends a directive at a newline. Every catalog or KV string that the
gateway renders matches one of the patterns below, none of which admits any of those characters;
the template's `token` filter re-checks each value as it is written (defence in depth).
"""

from __future__ import annotations

import ipaddress
import re

#: A service name, used as-is inside the backend name `be_<service>` and the default route.
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")

#: An environment name (tag `env=<name>`, meta `env`, KV `shopgate/gateway/environments/<name>/`).
ENVIRONMENT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")

#: A cookie name for sticky sessions (KV `sticky_cookie`).
COOKIE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,80}")
#: A service name that is one DNS label of `_<service>._tcp.service.consul`, as Consul's DNS answers it: Consul's
#: agent warns that any other name "will not be discoverable via DNS due to invalid characters" (a dot splits the
#: label, an underscore is not a hostname character).
DNS_SERVICE_NAME = re.compile(r"[A-Za-z0-9-]{1,63}")

#: A dynamic server's name (HAProxy's server names allow letters, digits, '.', '-', '_', ':'; ':' left out here),
#: and what gateway.routing replaces in an instance id to make one.
SERVER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
NOT_SERVER_NAME_CHAR = re.compile(r"[^A-Za-z0-9_.-]")

#: A URL path prefix: unreserved characters and '/', starting with '/'.
PATH_PREFIX = re.compile(r"/[A-Za-z0-9._~/-]{0,255}")

#: A DNS hostname (RFC 1123 labels), lower-cased before matching.
HOSTNAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")

#: A `host:port` bind address for the listen and stats sockets (IPv4, hostname, or [IPv6]).
BIND_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):[0-9]{1,5}")

#: Everything the template's `token` filter lets through: no blank, quote, backslash, '#', '$', '{', '}'.
TOKEN = re.compile(r"[A-Za-z0-9_.:/@%+=,!?*~^\[\]-]+")

#: The HAProxy weight range.
MAX_WEIGHT = 256


class UnsafeValue(ValueError):
    """A value that would change the meaning of haproxy.cfg if written into it."""


def display(value: object, limit: int = 60) -> str:
    """A value quoted for an error message: one line, printable, bounded."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def check_token(value: object) -> str:
    """Return `value` as a config word, or raise UnsafeValue: the renderer's last line of defence."""
    if not isinstance(value, str) or not TOKEN.fullmatch(value):
        raise UnsafeValue(f"refusing to write {display(value)} into haproxy.cfg: not a plain config word")
    return value


def check_dns_label(value: object) -> str:
    """Return `value` as a service name that resolves over Consul's DNS, or raise UnsafeValue."""
    if not isinstance(value, str) or not DNS_SERVICE_NAME.fullmatch(value):
        raise UnsafeValue(f"refusing to write {display(value)} into an SRV name: only A-Z a-z 0-9 - resolve over Consul's DNS")
    return value


def path_problem(path: str) -> str | None:
    """Why `path` is not a usable route prefix, or None when it is."""
    if not path.startswith("/"):
        return f"path {display(path)} does not start with '/'"
    if not PATH_PREFIX.fullmatch(path):
        return f"path {display(path)} has characters outside A-Z a-z 0-9 . _ ~ - /"
    if "//" in path:
        return f"path {display(path)} has an empty segment '//'"
    if any(segment in (".", "..") for segment in path.split("/")):
        return f"path {display(path)} has a '.' or '..' segment"
    return None


def address_problem(address: str) -> str | None:
    """Why `address` is not an IP address or hostname HAProxy can use, or None when it is."""
    if not address:
        return "no address"
    if not isinstance(address, str) or not re.fullmatch(r"[0-9A-Za-z.:-]+", address):
        return f"address {display(address)} is neither an IP address nor a hostname"
    try:
        ipaddress.ip_address(address)
        return None
    except ValueError:
        pass
    if ":" in address or not HOSTNAME.fullmatch(address.lower()):
        return f"address {display(address)} is neither an IP address nor a hostname"
    return None


def port_problem(port: object) -> str | None:
    """Why `port` is not a TCP port, or None when it is."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        return f"port {display(port)} is not in 1..65535"
    return None


#: A userlist user name (route guard `auth`): a plain word, no ':' (the KV value's separator).
USER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

#: crypt(3) hashes HAProxy's `user ... password` takes (through libc): SHA-256 ($5$), SHA-512 ($6$),
#: bcrypt ($2a$/$2b$/$2y$). Only crypt's alphabet [./0-9A-Za-z] and '$' separators: '$' is only
#: special to HAProxy inside double quotes ("${VAR}"), and the hash is written unquoted.
PASSWORD_HASH = re.compile(
    r"\$[56]\$(rounds=[0-9]{1,9}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{43}([./0-9A-Za-z]{43})?"
    r"|\$2[aby]\$[0-9]{2}\$[./0-9A-Za-z]{53}")


def check_password_hash(value: object) -> str:
    """Return `value` as a crypt(3) hash to write unquoted, or raise UnsafeValue (the render's re-check)."""
    if not isinstance(value, str) or not PASSWORD_HASH.fullmatch(value):
        raise UnsafeValue(f"refusing to write {display(value)} into haproxy.cfg: not a $5$, $6$ or $2y$ crypt hash")
    return value


def network_problem(text: str) -> str | None:
    """Why `text` is not an IPv4/IPv6 address or CIDR network (host bits clear), or None when it is."""
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        return f"{display(text)} is not an address or CIDR network ({error})"
    return None
