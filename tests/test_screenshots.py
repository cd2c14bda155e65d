"""Headless Chromium looks at a running stack: the HAProxy stats page and the catalog UI show the services.

The PNGs are kept under artifacts/ (gitignored) for people to look at; the assertions are on the
text the browser rendered.
"""

from __future__ import annotations

import pytest

from browser import page_text, screenshot
from shopgate.settings import PROJECT_ROOT, SHOP_SERVICES
from stack_harness import StackUnderTest

pytestmark = pytest.mark.browser

ARTIFACTS = PROJECT_ROOT / "artifacts"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = StackUnderTest(tmp_path_factory.mktemp("screens"))
    try:
        stack.up(instances=1)
        yield stack
    finally:
        stack.cleanup()


def test_haproxy_stats_page_shows_every_service_backend_up(stack):
    url = stack.ports.stats_url
    text = page_text(url, wait_ms=1000)
    for service in SHOP_SERVICES:
        assert service in text, f"{service} missing from the stats page:\n{text[:2000]}"
    assert "UP" in text
    png = screenshot(url, ARTIFACTS / "haproxy-stats.png", height=1400, wait_ms=1000)
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_catalog_ui_lists_every_service(stack):
    url = f"{stack.ports.catalog_url}/ui/"
    text = page_text(url, wait_ms=3000)
    for service in SHOP_SERVICES:
        assert service in text, f"{service} missing from the catalog UI:\n{text[:2000]}"
    png = screenshot(url, ARTIFACTS / "catalog-ui.png", wait_ms=3000)
    assert png.read_bytes().startswith(PNG_MAGIC)
