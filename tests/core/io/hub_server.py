"""Local HTTP servers (127.0.0.1) for the download tests: a file server speaking the Hub's
resolve protocol, with injectable faults, and a TCP listener that only counts connections."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import signal
import socket
import threading
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

import huggingface_hub.constants as hf_constants

COMMIT = "0123456789abcdef0123456789abcdef01234567"

# Faults a route can be given (server.faults[url path]):
#   truncate   announce the full size, send half, close
#   bad_sha    announce (ETag) a sha256 the body does not have
#   stall      send half, then nothing until the client gives up
#   trickle    send one byte every 50 ms
#   interrupt  send half, then SIGINT the main thread (Ctrl-C), then the rest
#   chunked    no Content-Length: send the body chunked, ten times over
FAULTS = ("truncate", "bad_sha", "stall", "trickle", "interrupt", "chunked")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    routes: dict[str, Path]
    faults: dict[str, str]
    requests: list[str]
    released: threading.Event


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes`` (URL path -> file) with the headers the Hub sends."""

    protocol_version = "HTTP/1.1"

    def do_HEAD(self):
        self._serve(send_body=False)

    def do_GET(self):
        self._serve(send_body=True)

    def _serve(self, send_body: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        self.server.requests.append(f"{self.command} {path}")
        file = self.server.routes.get(path)
        if file is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = file.read_bytes()
        fault = self.server.faults.get(path)
        sha = hashlib.sha256(b"not the body" if fault == "bad_sha" else data).hexdigest()
        self.send_response(200)
        if fault == "chunked" and send_body:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{sha}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Connection", "close")
        self.end_headers()
        if send_body:
            with contextlib.suppress(OSError):  # the client gave up, as the test wants
                self._body(data, fault)
        self.close_connection = True

    def _body(self, data: bytes, fault: str | None) -> None:
        half = len(data) // 2
        if fault in ("truncate", "stall", "interrupt"):
            self.wfile.write(data[:half])
            self.wfile.flush()
            if fault == "stall":
                self.server.released.wait(30)
            if fault == "interrupt":
                time.sleep(0.1)  # let the client reach its read loop
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                time.sleep(0.2)
                self.wfile.write(data[half:])
            return
        if fault == "trickle":
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(0.05)
            return
        if fault == "chunked":
            for _ in range(10):
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@contextmanager
def serve(routes: dict[str, Path], faults: dict[str, str] | None = None):
    """Yield (server, base URL) of a file server on 127.0.0.1."""
    server = Server(("127.0.0.1", 0), Handler)
    server.routes, server.faults, server.requests = routes, dict(faults or {}), []
    server.released = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def hub_routes(folder: Path, repo_id: str = "nvidia/dvlt") -> dict[str, Path]:
    """The resolve URLs of every file of ``folder``, at ``main`` and at :data:`COMMIT`."""
    return {
        f"/{repo_id}/resolve/{revision}/{file.name}": file
        for revision in ("main", COMMIT)
        for file in folder.iterdir()
    }


def point_hub_at(monkeypatch, base: str) -> None:
    """Make huggingface_hub (and so the checkpoint loader) talk to ``base``, online."""
    monkeypatch.setattr(hf_constants, "ENDPOINT", base)
    template = base + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


class SilentEndpoint:
    """A TCP listener on 127.0.0.1 that reads each request line, records it and closes the
    connection without an answer: a Hub endpoint that never answers."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def file_requests(self) -> list[str]:
        """The requests for repository files (huggingface_hub also fetches, at most once a
        day, a registry of its own: ``/api/agent-harnesses``)."""
        return [r for r in self.requests if "/resolve/" in r]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.socket.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    self.requests.append(conn.recv(4096).split(b"\r\n")[0].decode())
                except OSError:
                    self.requests.append("(no request line)")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.socket.close()


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
