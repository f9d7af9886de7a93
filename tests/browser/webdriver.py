"""A small W3C WebDriver client (https://www.w3.org/TR/webdriver2/) over httpx, driving
Debian's ``chromedriver`` and headless ``chromium``: enough to load a page, read the DOM, fill
a form, click and take a screenshot. No Selenium: its driver manager would try to download a
browser, and these few commands are all the tests need."""

from __future__ import annotations

import base64
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C element reference key
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--no-first-run", "--disable-default-apps", "--disable-extensions",
    "--window-size=1280,1400", "--hide-scrollbars",
]


def binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) when both are installed (``make browser``)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One WebDriver session; :meth:`find` etc. raise on a WebDriver error."""

    def __init__(self, url: str, session: str) -> None:
        self.http = httpx.Client(base_url=f"{url}/session/{session}", timeout=30.0)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = self.http.request(method, path, json=body if body is not None else None)
        value = r.json().get("value")
        if r.status_code >= 400:
            raise RuntimeError(f"webdriver {method} {path}: {value}")
        return value

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    @property
    def url(self) -> str:
        return str(self._call("GET", "/url"))

    @property
    def title(self) -> str:
        return str(self._call("GET", "/title"))

    def find(self, css: str) -> str:
        return str(self._call("POST", "/element", {"using": "css selector", "value": css})[
            ELEMENT])

    def find_all(self, css: str) -> list[str]:
        found = self._call("POST", "/elements", {"using": "css selector", "value": css})
        return [str(e[ELEMENT]) for e in found]

    def text(self, element: str) -> str:
        return str(self._call("GET", f"/element/{element}/text"))

    def attr(self, element: str, name: str) -> str | None:
        v = self._call("GET", f"/element/{element}/attribute/{name}")
        return None if v is None else str(v)

    def type(self, element: str, text: str) -> None:
        self._call("POST", f"/element/{element}/value", {"text": text})

    def click(self, element: str) -> None:
        self._call("POST", f"/element/{element}/click", {})

    def click_to_load(self, element: str, timeout: float = 20.0) -> None:
        """Click what submits a form or follows a link, and wait until the next document has
        loaded (a click's return does not always wait for the navigation it starts)."""
        self.script("window.__payoutsOld = true")
        self.click(element)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.script("return !window.__payoutsOld && "
                               "document.readyState === 'complete'"):
                    return
            except RuntimeError:
                pass  # the old document went away mid-call
            if time.monotonic() > deadline:
                raise RuntimeError("the click did not load a page")
            time.sleep(0.05)

    def script(self, js: str, *args: Any) -> Any:
        return self._call("POST", "/execute/sync", {"script": js, "args": list(args)})

    def cookies(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/cookie"))

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))

    def full_screenshot(self, path: Path, width: int = 1280) -> None:
        """The whole page: the window grown to the document's height first."""
        height = int(self.script("return document.documentElement.scrollHeight"))
        self._call("POST", "/window/rect", {"width": width, "height": min(height + 40, 6000)})
        self.screenshot(path)


@contextlib.contextmanager
def browser() -> Iterator[Browser]:
    """chromedriver on a free loopback port and one headless chromium session in a fresh
    profile; both stopped afterwards."""
    found = binaries()
    if found is None:
        raise RuntimeError("chromium and chromedriver are not installed (make browser)")
    chromium, driver = found
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="payouts-chromium-")
    proc = subprocess.Popen([driver, f"--port={port}", "--allowed-ips=127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/status", timeout=1.0).json()["value"]["ready"]:
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium,
                                   "args": [*CHROMIUM_ARGS, f"--user-data-dir={profile}"]},
        }}}
        r = httpx.post(f"{url}/session", json=caps, timeout=60.0)
        session = r.json()["value"]["sessionId"]
        b = Browser(url, session)
        try:
            yield b
        finally:
            with contextlib.suppress(httpx.HTTPError):
                httpx.delete(f"{url}/session/{session}", timeout=20.0)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
