"""Drive a real headless Chromium over the DevTools protocol: open a page, upload files into
its file inputs, click buttons, take screenshots, collect downloads.

Only the standard library and ``websockets`` (a dependency of viser) are used. Chromium is
started with a fresh profile and no network services of its own (no sync, updates, QUIC or
background requests), and with ``--remote-debugging-port=0``, so it picks a free port and
writes it into the profile's ``DevToolsActivePort`` file.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    """The Chromium executable on PATH (Debian's package installs /usr/bin/chromium)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless Chromium showing ``url``; downloads land in ``downloads``."""

    def __init__(self, executable: str, url: str, downloads: Path,
                 size: tuple[int, int] = (1280, 800), start_timeout: float = 60.0) -> None:
        self._profile = Path(tempfile.mkdtemp(prefix="dvlt-chromium-"))
        self._log = open(self._profile / "chromium.log", "wb")  # noqa: SIM115 (closed in close)
        self._process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
             f"--window-size={size[0]},{size[1]}", url],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._next_id = 0
        try:
            port, browser_path = self._devtools_endpoint(start_timeout)
            self._browser = connect(f"ws://127.0.0.1:{port}{browser_path}", max_size=None)
            self._send(self._browser, "Browser.setDownloadBehavior", behavior="allow",
                       downloadPath=str(downloads))
            self._page = connect(self._page_socket(port, start_timeout), max_size=None)
        except BaseException:
            self.close()
            raise

    def _devtools_endpoint(self, timeout: float) -> tuple[int, str]:
        marker = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._process.returncode}: "
                                   f"{self.log_tail()}")
            lines = marker.read_text().split() if marker.is_file() else []
            if len(lines) == 2:
                return int(lines[0]), lines[1]
            time.sleep(0.1)
        raise TimeoutError(f"chromium wrote no DevToolsActivePort in {timeout} s")

    def _page_socket(self, port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise TimeoutError(f"chromium opened no page in {timeout} s")

    def _send(self, socket: Any, method: str, **params: Any) -> dict:
        self._next_id += 1
        request_id = self._next_id
        socket.send(json.dumps({"id": request_id, "method": method, "params": params}))
        while True:  # events arrive in between; the answer carries our id
            message = json.loads(socket.recv(timeout=60))
            if message.get("id") == request_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def call(self, method: str, **params: Any) -> dict:
        """Send one DevTools command to the page and return its result."""
        return self._send(self._page, method, **params)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> Any:
        """Poll ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"{expression!r} stayed false for {timeout} s")

    def set_files(self, selector: str, paths: Sequence[Path]) -> None:
        """Choose ``paths`` in the file input ``selector`` (fires its change event)."""
        root = self.call("DOM.getDocument", depth=-1, pierce=True)["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise LookupError(f"no element matches {selector!r}")
        self.call("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def click_button(self, label: str) -> None:
        """Click the enabled button whose text is ``label``."""
        found = self.evaluate(
            "(() => { const b = [...document.querySelectorAll('button')].find("
            f"b => b.textContent.trim() === {json.dumps(label)} && !b.disabled);"
            " if (!b) return false; b.click(); return true; })()"
        )
        if not found:
            raise LookupError(f"no enabled button labelled {label!r}")

    def screenshot(self) -> bytes:
        """A PNG of the page as it is drawn now."""
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def log_tail(self, chars: int = 2000) -> str:
        self._log.flush()
        return (self._profile / "chromium.log").read_bytes()[-chars:].decode(errors="replace")

    def close(self) -> None:
        for name in ("_page", "_browser"):
            socket = getattr(self, name, None)
            if socket is not None:
                socket.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)
