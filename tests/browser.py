"""Headless Chromium for tests: a screenshot of a page, or its text after its scripts ran.

`screenshot` and `page_text` run one short-lived `chromium --headless` per call, with a
throw-away profile, stopped by pid if it overruns. `--virtual-time-budget` lets the page's
scripts and fetches settle before the capture. Virtual time stands still while a request
is open, so a page that holds one (a blocking query) is never "settled": capture such a
page in its one-shot mode (the catalog UI: `/ui/?live=0`), and drive live pages with
`live_browser()` (Playwright driving the same Chromium) instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import pytest

from shopgate.processes import stop_pid

CHROMIUM = os.environ.get("SHOPGATE_CHROMIUM", "/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Flags for a quiet, offline, sandbox-less browser (tests run as root, no GPU, no internet).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
)


def chromium_path() -> str:
    """The Chromium binary, or skip the calling test with the reason."""
    found = shutil.which(CHROMIUM)
    if not found:
        pytest.skip(f"headless Chromium not found at {CHROMIUM} (install the Debian package `chromium`)")
    return found


def _run(args: list[str], timeout_s: float) -> str:
    """Run chromium with a fresh profile; return its stdout. Stopped by pid (and group) on timeout."""
    with tempfile.TemporaryDirectory(prefix="shopgate-chromium-") as profile:
        argv = [chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop_pid(proc.pid, timeout=3, signum=signal.SIGTERM, group=True)
            out, err = proc.communicate()
            raise TimeoutError(f"chromium did not finish within {timeout_s}s: {' '.join(args)}\n{err.decode(errors='replace')[-800:]}")
        if proc.returncode != 0:
            raise RuntimeError(f"chromium exited with {proc.returncode}: {' '.join(args)}\n{err.decode(errors='replace')[-800:]}")
        return out.decode(errors="replace")


def screenshot(url: str, path: str | os.PathLike, width: int = 1280, height: int = 900, wait_ms: int = 3000, timeout_s: float = 30) -> Path:
    """Save a PNG of `url` as rendered after `wait_ms` of (virtual) time. Returns the path."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    _run([f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}", f"--screenshot={path}", url], timeout_s)
    if not path.exists() or not path.read_bytes().startswith(PNG_MAGIC):
        raise RuntimeError(f"chromium wrote no PNG to {path}")
    return path


def page_dom(url: str, wait_ms: int = 3000, timeout_s: float = 30, extra: tuple[str, ...] = ()) -> str:
    """The serialized DOM of `url` after its scripts ran for `wait_ms` of (virtual) time; `extra`: more flags."""
    return _run([f"--virtual-time-budget={wait_ms}", *extra, "--dump-dom", url], timeout_s)


def page_text(url: str, wait_ms: int = 3000, timeout_s: float = 30) -> str:
    """What a reader sees on `url`: the rendered DOM's text, without scripts, styles or hidden elements."""
    return dom_text(page_dom(url, wait_ms=wait_ms, timeout_s=timeout_s))


class _TextExtractor(HTMLParser):
    """Collect text outside <script>, <style>, <template> and elements marked `hidden`."""

    SKIP = {"script", "style", "template", "noscript", "head"}
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
    BLOCK = {"p", "div", "section", "article", "header", "footer", "main", "nav", "li", "tr", "h1", "h2", "h3", "h4", "pre", "table", "br"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[bool] = []  # per open element: is it (or an ancestor) skipped?

    def handle_starttag(self, tag, attrs):
        if tag in self.BLOCK:
            self.parts.append("\n")
        if tag in self.VOID:
            return
        skipped = bool(self.stack and self.stack[-1]) or tag in self.SKIP or any(name == "hidden" for name, _ in attrs)
        self.stack.append(skipped)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if self.stack:
            self.stack.pop()
        if tag in self.BLOCK or tag in ("td", "th"):
            self.parts.append("\n" if tag in self.BLOCK else " ")

    def handle_data(self, data):
        if not (self.stack and self.stack[-1]):
            self.parts.append(data)


def dom_text(html: str) -> str:
    """Visible text of serialized HTML, one block per line, blank lines dropped."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


@contextmanager
def live_browser():
    """A Playwright browser on the system Chromium, for pages that change while watched.

    Playwright's own browser download cannot work offline; `executable_path` points it at
    /usr/bin/chromium. Skips the calling test when Playwright or Chromium is missing.
    """
    executable = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    flags = [flag for flag in CHROMIUM_FLAGS if flag != "--headless"]  # Playwright adds its own
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=flags, headless=True, timeout=30_000)
        try:
            yield browser
        finally:
            browser.close()
