"""uvicorn's HTTP/1.1 protocol, answering requests it cannot parse with a problem+json 400.

uvicorn refuses a request it cannot parse (a ``Content-Length`` that is not a number, a header
with a control character, a malformed request line) itself, before any route runs, with a
``text/plain`` 400. Every refusal of our servers is an RFC 9457 problem (``problems``), so
``ProblemHTTPProtocol`` writes that 400 as one too; ``synchronicity log serve`` and
``witness run`` serve with it (``synchronicity.cmd_log.run_app``).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from logserver.http.problems import problem


class ProblemHTTPProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose answer to unparsable bytes is a problem."""

    def send_400_response(self, msg: str) -> None:
        answer = problem(400, f"the request is not valid HTTP/1.1 ({msg.rstrip('.')})")
        lines = [b"HTTP/1.1 400 Bad Request\r\n"]
        lines += [
            name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
        ]
        lines += [
            b"content-type: " + answer.headers["content-type"].encode("latin-1") + b"\r\n",
            b"content-length: %d\r\n" % len(answer.body),
            b"connection: close\r\n\r\n",
            bytes(answer.body),
        ]
        self.transport.write(b"".join(lines))
        self.transport.close()
