"""The decoder of `/v1/kv/<prefix>?recurse` answers, as py-consul returns them."""

from __future__ import annotations

from typing import Any


def kv_from_entries(entries: Any) -> dict[str, bytes]:
    """Entries -> key: raw value. py-consul has already base64-decoded each Value (None when the key
    holds no value); no entries at all (a 404: nothing under the prefix) is {}."""
    return {str(entry.get("Key")): entry.get("Value") or b"" for entry in entries if isinstance(entry, dict)} \
        if isinstance(entries, list) else {}
