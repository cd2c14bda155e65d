"""Headless Chromium looks at a running stack: the HAProxy stats page and the catalog UI show the services.

The PNGs are kept under artifacts/ (gitignored) for people to look at; the assertions are on the
text the browser rendered.
"""

from __future__ import annotations

import pytest

from browser import page_text, screenshot
from shopgate.settings import PROJECT_ROOT, SHOP_SERVICES
from shopgate.tool.probes import gateway_status
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
    backends = {name: svc["backend"] for name, svc in gateway_status(stack.ports).get("services", {}).items()}
    assert set(backends) >= set(SHOP_SERVICES)
    text = page_text(url, wait_ms=1000)
    for service in SHOP_SERVICES:
        assert backends[service] in text, f"backend {backends[service]} missing from the stats page:\n{text[:2000]}"
    assert text.count(" UP") >= 2 * len(SHOP_SERVICES), "each backend and its one server are UP"
    png = screenshot(url, ARTIFACTS / "stack-haproxy-stats.png", height=1400, wait_ms=1000)
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_catalog_ui_lists_every_service(stack):
    url = f"{stack.ports.catalog_url}/ui/?live=0"   # one-shot mode: no blocking query keeps the page loading
    text = page_text(url, wait_ms=3000)
    for record in stack.manifest().processes:
        if record.service:
            assert f"{record.service}-{record.port}" in text, f"instance {record.name} missing from the catalog UI:\n{text[:2000]}"
    png = screenshot(url, ARTIFACTS / "stack-catalog-ui.png", wait_ms=3000)
    assert png.read_bytes().startswith(PNG_MAGIC)
