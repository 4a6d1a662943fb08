"""A minimal W3C WebDriver client (over httpx) for Debian's chromium + chromedriver.

Just what the webserver smoke test needs (open a page, read its text, take a screenshot); a browser
automation library would be a dependency for these four calls.
"""

import base64
import os
import shutil
import socket
import subprocess
from pathlib import Path

import httpx

from pipeline_project.ops.wait import wait_until

CHROMIUM = os.environ.get("CHROMIUM_BINARY") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
# The closed network refuses Chromium's background connections; these flags keep it from trying.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
]


def browser_available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Browser:
    def __init__(self, profile_dir: Path) -> None:
        self.port = free_port()
        self.driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        wait_until(self._ready, 10, "chromedriver ready", interval=0.1)
        capabilities = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": [*CHROMIUM_ARGS, f"--user-data-dir={profile_dir}"]},
        }
        response = self.http.post("/session", json={"capabilities": {"alwaysMatch": capabilities}})
        self.session = response.json()["value"]["sessionId"]

    def _ready(self) -> bool:
        try:
            return self.http.get("/status").json()["value"]["ready"]
        except httpx.TransportError:
            return False

    def _call(self, method: str, path: str, payload: dict | None = None):
        response = self.http.request(method, f"/session/{self.session}{path}", json=payload)
        response.raise_for_status()
        return response.json()["value"]

    def open(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def text(self) -> str:
        return self._call("POST", "/execute/sync", {"script": "return document.body.innerText", "args": []})

    def click_button(self, label: str) -> bool:
        """Click the first button whose text is `label`; False when there is none."""
        script = (
            "const button = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === arguments[0]);"
            "if (button) { button.click(); return true; } return false;"
        )
        return self._call("POST", "/execute/sync", {"script": script, "args": [label]})

    def wait_for_text(self, needles: list[str], timeout: float = 90) -> str:
        text = ""

        def showing() -> str:
            nonlocal text
            text = self.text()
            return text if all(needle in text for needle in needles) else ""

        return wait_until(showing, timeout, f"the page showing {needles}", describe=lambda _: text[:2000])

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))

    def close(self) -> None:
        try:
            self._call("DELETE", "")
        finally:
            self.http.close()
            self.driver.terminate()
            self.driver.wait(timeout=10)
