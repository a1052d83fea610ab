"""A test-only HTTP proxy in front of a log that passes every GET through but may rewrite the
JSON answers of ``/crates/...``: a log whose crate index lies while its leaves stay honest."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

Rewrite = Callable[[str, dict[str, Any]], dict[str, Any]]


class LyingProxy:
    """Serves on 127.0.0.1 (any port) what ``upstream`` serves, ``rewrite(path, answer)``
    applied to each 200 answer under ``/crates/``."""

    def __init__(self, upstream: str, rewrite: Rewrite) -> None:
        client = httpx.Client(base_url=upstream, timeout=30)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                r = client.get(self.path)  # without Accept-Encoding: bodies come plain
                body = r.content
                if self.path.startswith("/crates/") and r.status_code == 200:
                    path = self.path.split("?")[0]
                    body = json.dumps(rewrite(path, r.json())).encode()
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("content-type", "text/plain"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._client = client
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> LyingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


def hide_newest_verdict(crate: str) -> Rewrite:
    """A rewrite that drops the newest verdict of every version of ``crate`` that has more
    than one, fixing the counts so that the answer looks whole."""

    def rewrite(path: str, answer: dict[str, Any]) -> dict[str, Any]:
        if answer.get("name") != crate:
            return answer
        versions = answer.get("versions", [answer])
        for item in versions:
            if item["verdicts_total"] > 1:
                item["verdicts"] = item["verdicts"][:-1]
                item["verdicts_total"] -= 1
                if "reproduced_total" in item:
                    outcomes = [row["outcome"] for row in item["verdicts"]]
                    item["reproduced_total"] = outcomes.count("reproduced")
        return answer

    return rewrite
