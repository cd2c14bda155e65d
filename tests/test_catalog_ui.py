"""The catalog's web UI in headless Chromium, against a real catalog with real registrations.

Static captures use the UI's one-shot mode (`?live=0`); the live test drives the page
with Playwright while services come, go, change health and the catalog restarts.
Screenshots are kept under artifacts/ for a person to look at.
"""

from __future__ import annotations

import re
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import consul
import pytest

from browser import PNG_MAGIC, dom_text, live_browser, page_dom, screenshot
from shopgate.consul_client import ConsulAddress, connect
from shopgate.settings import PROJECT_ROOT

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

ARTIFACTS = PROJECT_ROOT / "artifacts"
UI_TIMEOUT_MS = 10_000  # generous upper bound for the page to catch up; it normally takes well under a second


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    """A tiny real HTTP server whose /health answers 200, for an HTTP check the catalog runs."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def wait_until(condition, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def shop(catalog, health_server):
    """products-1 passing its HTTP check, payments-1 failing its TTL check, a few KV keys."""
    client = catalog.client()
    products_port = health_server.server_address[1]
    client.agent.service.register(
        "products", service_id="products-1", address="127.0.0.1", port=products_port,
        tags=["urlprefix-/api/v1/products"], check=consul.Check.http(f"http://127.0.0.1:{products_port}/health", interval="1s"),
    )
    client.agent.service.register("payments", service_id="payments-1", address="127.0.0.2", port=7070, check=consul.Check.ttl("60s"))
    client.agent.check.ttl_fail("service:payments-1", notes="card processor unreachable")
    client.kv.put("shopgate/settings/balance", "leastconn")
    client.kv.put("shopgate/routes/products", "<b>not markup</b>")
    wait_until(lambda: client.health.service("products", passing=True)[1], "products-1 to pass its HTTP check")
    return {"client": client, "products_address": f"127.0.0.1:{products_port}"}


def instance_health(dom: str, instance_id: str) -> str | None:
    """The health the page shows for one instance row (its data-health, set with its badge)."""
    row = re.search(rf'<tr [^>]*data-instance="{re.escape(instance_id)}"[^>]*>', dom)
    health = row and re.search(r'data-health="([a-z]+)"', row.group(0))
    return health.group(1) if health else None


def assert_png(path, width: int, height: int) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (width, height)
    assert len(data) > 10_000, f"{path} is suspiciously small ({len(data)} bytes): a blank page?"


def test_services_page_shows_instances_health_and_check_output(catalog, shop):
    dom = page_dom(f"{catalog.url}/ui/?live=0")
    text = dom_text(dom)

    for expected in ("products", "payments", "products-1", "payments-1", shop["products_address"], "127.0.0.2:7070",
                     "urlprefix-/api/v1/products", "card processor unreachable"):
        assert expected in text, f"{expected!r} missing from the services page:\n{text}"
    assert instance_health(dom, "products-1") == "passing"
    assert instance_health(dom, "payments-1") == "critical"
    assert "1 passing" in text and "1 critical" in text
    assert "catalog unreachable" not in text

    shot = screenshot(f"{catalog.url}/ui/?live=0", ARTIFACTS / "catalog-ui-services.png", width=1280, height=900)
    assert_png(shot, 1280, 900)


def test_kv_page_shows_the_tree_with_decoded_values_as_text(catalog, shop):
    dom = page_dom(f"{catalog.url}/ui/?live=0#/kv")
    text = dom_text(dom)

    assert "shopgate/" in text and "settings/" in text and "routes/" in text
    assert "balance" in text and "leastconn" in text  # base64 in the API, text on the page
    assert "<b>not markup</b>" in text  # shown as the characters it is...
    assert "<b>" not in dom  # ...never parsed as markup

    shot = screenshot(f"{catalog.url}/ui/?live=0#/kv", ARTIFACTS / "catalog-ui-kv.png", width=1280, height=600)
    assert_png(shot, 1280, 600)


def test_page_follows_the_catalog_live_and_survives_a_restart(catalog, shop):
    client = shop["client"]
    with live_browser() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        script_errors: list[str] = []
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        page.goto(f"{catalog.url}/ui/")
        page.wait_for_selector('tr[data-instance="products-1"][data-health="passing"]', timeout=UI_TIMEOUT_MS)

        # A new instance appears, changes health, and goes, without a reload.
        client.agent.service.register("orders", service_id="orders-1", address="127.0.0.3", port=7171, check=consul.Check.ttl("60s"))
        page.wait_for_selector('tr[data-instance="orders-1"][data-health="critical"]', timeout=UI_TIMEOUT_MS)
        assert "127.0.0.3:7171" in page.text_content('tr[data-instance="orders-1"]')
        client.agent.check.ttl_pass("service:orders-1", notes="all good")
        page.wait_for_selector('tr[data-instance="orders-1"][data-health="passing"]', timeout=UI_TIMEOUT_MS)
        client.agent.service.maintenance("orders-1", "true", reason="deploying")
        page.wait_for_selector('tr[data-instance="orders-1"][data-health="maintenance"]', timeout=UI_TIMEOUT_MS)
        page.screenshot(path=str(ARTIFACTS / "catalog-ui-live.png"))
        client.agent.service.deregister("orders-1")
        page.wait_for_selector('tr[data-instance="orders-1"]', state="detached", timeout=UI_TIMEOUT_MS)

        # The catalog goes away: the page says so, keeps the last view, and recovers by itself.
        catalog.stop()
        page.wait_for_selector('#banner[data-state="down"]', timeout=UI_TIMEOUT_MS)
        assert "catalog unreachable, retrying" in page.text_content("#banner")
        page.screenshot(path=str(ARTIFACTS / "catalog-ui-down.png"))
        catalog.start()
        page.wait_for_selector("#banner", state="hidden", timeout=UI_TIMEOUT_MS)
        client.agent.service.register("orders", service_id="orders-2", address="127.0.0.4", port=7272)
        page.wait_for_selector('tr[data-instance="orders-2"]', timeout=UI_TIMEOUT_MS)

        assert script_errors == []


def test_acl_token_pasted_in_the_page_is_sent_and_remembered(catalog_factory):
    secured = catalog_factory("secured", extra_args=("--acl-token", "s3cret-token"))
    connect(ConsulAddress.parse(secured.url, token="s3cret-token")).kv.put("shopgate/settings/balance", "first")
    with live_browser() as browser:
        page = browser.new_page()
        page.goto(f"{secured.url}/ui/#/kv")
        page.wait_for_selector('#banner[data-state="denied"]', timeout=UI_TIMEOUT_MS)
        assert page.is_visible("#token-form")

        page.fill("#token-input", "s3cret-token")
        page.click('#token-form button[type="submit"]')
        page.wait_for_selector('tr[data-key="shopgate/settings/balance"]', timeout=UI_TIMEOUT_MS)
        assert "first" in page.text_content('tr[data-key="shopgate/settings/balance"]')

        page.reload()
        page.wait_for_selector('tr[data-key="shopgate/settings/balance"]', timeout=UI_TIMEOUT_MS)
        assert page.is_hidden("#banner")
