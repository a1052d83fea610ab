"""Hostile HTTP requests as Hypothesis strategies, and a driver that checks every answer.

A request is built from one of a server's routes (``Route``): a method (mostly the route's own,
sometimes any other), a path whose variable segments are hostile (Unicode digits, huge numbers,
leading zeros, ``..``, percent-encoding, raw UTF-8), a query string, headers (``Content-Length``
that lies, is not a number or comes twice, ``Transfer-Encoding``, ``Content-Encoding``,
signature headers) and a body of the route's kind (random bytes, huge ones, JSON nested deep,
truncated and mutated notes and protocol entries, consensus envelopes, add-checkpoint
requests). ``Fuzzer.run`` sends a batch over a few keep-alive connections at once and returns
what broke the rules:

- no answer is a 5xx;
- every 4xx is ``application/problem+json`` with a ``detail`` (a HEAD answer has no body);
  except the dashboard's HTML pages, whose 4xx are HTML for browsers, and add-checkpoint's
  409, whose ``text/x.tlog.size`` body c2sp.org/tlog-witness fixes;
- a request is answered, unless it promised more body than it sent (the server then waits for
  the rest, as HTTP says).
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import re
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.support.rawhttp import Connection, NoResponse, RawResponse

PROBLEM = "application/problem+json"
SIZE_TYPE = "text/x.tlog.size"
METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
UNICODE_DIGITS = "²³¹٠١٢३४০৫๑០᠑０１２𝟎𝟙⁰₁"
NUMBER_WORDS = [
    "0", "1", "00", "01", "007", "-1", "+1", " 1", "1 ", "1e3", "0x1f", "1_0", "", "1.0",
    "NaN", "9" * 25, str(2**63), str(2**63 - 1), str(2**64), "²", "١٢", "１",
]  # fmt: skip
LIE_WAIT = 0.1  # how long to wait for an answer to a request that sent less than it said


@dataclass(frozen=True)
class Route:
    """One route of a server: its methods, a path template whose ``{n}`` (a number),
    ``{tile}`` (a tile path), ``{hex}`` (a SHA-256 name), ``{name}`` and ``{version}`` (a
    crate's) segments are fuzzed, its query parameters, the kind of body it takes and whether
    it is an HTML page of the dashboard."""

    @property
    def pattern(self) -> str:
        """The path as the server declares it, its segments named ``{}``."""
        return re.sub(r"\{[a-z_0-9]+(?::path)?\}", "{}", self.template)

    methods: tuple[str, ...]
    template: str
    params: tuple[str, ...] = ()
    body: str | None = None
    html: bool = False


LOG_ROUTES = (
    Route(("POST",), "/add-entry", body="entry"),
    Route(("GET",), "/entry/{n}"),
    Route(("GET",), "/checkpoint"),
    Route(("GET",), "/latest-checkpoint", ("after", "wait_ms")),
    Route(("GET",), "/tile/{tile}"),
    Route(("GET",), "/proof/inclusion", ("index", "size")),
    Route(("GET",), "/proof/consistency", ("old", "new")),
    Route(("GET",), "/proof/tlog", ("index",)),
    Route(("GET",), "/crates/{name}", ("size",)),
    Route(("GET",), "/crates/{name}/{version}", ("size",)),
    Route(("POST",), "/cosignature", body="note"),
    Route(("GET",), "/witnesses"),
    Route(("PUT", "GET"), "/blob/{hex}", body="blob"),
    Route(("GET",), "/healthz"),
    Route(("GET",), "/readyz"),
    Route(("GET",), "/metrics"),
    Route(("GET",), "/", html=True),
    Route(("GET",), "/builds", ("page", "q"), html=True),
    Route(("GET",), "/build/{hex}", html=True),
    Route(("GET",), "/checkpoints", ("before",), html=True),
    Route(("GET",), "/coverage", ("page", "q"), html=True),
)
WITNESS_ROUTES = (
    Route(("POST",), "/consensus", body="envelope"),
    Route(("POST",), "/request", body="recipe"),
    Route(("PUT",), "/crate/{hex}", body="blob"),
    Route(("POST",), "/add-checkpoint", body="add-checkpoint"),
    Route(("GET",), "/status"),
    Route(("GET",), "/healthz"),
    Route(("GET",), "/readyz"),
    Route(("GET",), "/metrics"),
)


@dataclass(frozen=True)
class Samples:
    """Real bytes of the servers under test, for mutations: signed checkpoint notes and
    protocol entries."""

    notes: tuple[bytes, ...]
    entries: tuple[bytes, ...]


@dataclass(frozen=True)
class FuzzRequest:
    """One generated request: its bytes, and what a correct answer may look like."""

    route: Route
    method: str
    target: bytes
    raw: bytes
    lies_long: bool  # it promises more body than it sends: no answer is correct

    def __repr__(self) -> str:
        head = self.raw[:300]
        return f"<{self.method} {self.target[:200]!r} ({len(self.raw)} bytes): {head!r}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """How Hypothesis prints a failing batch: short, never the whole body."""
        printer.text(repr(self))


class Batch(list[FuzzRequest]):
    """A batch of requests whose repr is a line (Hypothesis prints a failing example; the
    failure's message names the requests that broke a rule)."""

    def __repr__(self) -> str:
        return f"<a batch of {len(self)} requests>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def batches(routes: Sequence[Route], samples: Samples, size: int) -> st.SearchStrategy[Batch]:
    """Batches of ``size`` hostile requests to ``routes``."""
    return st.lists(requests(routes, samples), min_size=size, max_size=size).map(Batch)


# ----- paths and queries ---------------------------------------------------------------------

numbers = st.one_of(
    st.integers(0, 300).map(str),
    st.integers(0, 2**70).map(str),
    st.sampled_from(NUMBER_WORDS),
    st.text(alphabet=UNICODE_DIGITS + "0123456789", min_size=1, max_size=6),
)
hex_names = st.one_of(
    st.binary(min_size=32, max_size=32).map(bytes.hex),
    st.binary(min_size=32, max_size=32).map(lambda b: b.hex().upper()),
    st.binary(min_size=0, max_size=40).map(bytes.hex),
    st.sampled_from(["..", ".", "%00", "", "0" * 64, "g" * 64, "²" * 64]),
    st.text(min_size=0, max_size=70),
)
levels = st.one_of(
    st.sampled_from(["0", "1", "2", "entries", "63"]),
    st.sampled_from(["64", "01", "-1", "²", "entry", "", " 0"]),
)
groups = st.one_of(
    st.sampled_from(["000", "001", "x001/000", "x000/001", "x999/999"]),
    st.lists(st.from_regex(r"x?[0-9²]{1,4}", fullmatch=True), min_size=1, max_size=25).map(
        "/".join
    ),
)
widths = st.one_of(st.none(), st.integers(0, 300).map(str), st.sampled_from(NUMBER_WORDS))


tile_paths = st.one_of(
    st.builds(
        lambda level, number, width: f"{level}/{number}" + ("" if width is None else f".p/{width}"),
        levels,
        groups,
        widths,
    ),
    st.sampled_from(["../entry/0", "..", "%2e%2e/%2e%2e", "", "/", "0//000"]),
)
crate_names = st.one_of(
    st.sampled_from(["serde", "itoa", "Serde", "serde_json", "serde-json", "a" * 65, "..", ""]),
    st.text(max_size=70),
)
versions = st.one_of(
    st.sampled_from(["1.0.0", "1.0.0-rc.1", "1.0.0+build", "01.0.0", "1.0", "1.².0", ".."]),
    st.text(max_size=40),
)
SEGMENTS = {
    "{n}": numbers,
    "{tile}": tile_paths,
    "{hex}": hex_names,
    "{name}": crate_names,
    "{version}": versions,
}
ENCODINGS = st.sampled_from([0, 0, 0, 1, 2, 3])
PATH_TAILS = st.sampled_from(["", "", "", "", "/", "/..", "/../../etc/passwd", "//", "%00"])
QUERY_JUNK = st.sampled_from(["", "", "", "&&", "=", "&x", "%zz", "a=%ff", "?", "#frag"])
QUERY_VALUES = st.one_of(numbers, st.text(max_size=20))


def _encode(segment: str, mode: int) -> str:
    """A path segment percent-encoded (0, 1), double-encoded (2), or raw UTF-8 (3)."""
    if mode == 2:
        return quote(quote(segment, safe=""), safe="")
    if mode == 3:
        return segment
    return quote(segment, safe="/" if mode == 0 else "")


def _path(draw: st.DrawFn, route: Route) -> str:
    mode = draw(ENCODINGS)
    path = route.template
    for slot, strategy in SEGMENTS.items():
        if slot in path:
            path = path.replace(slot, _encode(draw(strategy), mode))
    return path + draw(PATH_TAILS)


def _query(draw: st.DrawFn, names: st.SearchStrategy[str]) -> str:
    pairs: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        name, value = draw(names), draw(QUERY_VALUES)
        if name == "wait_ms" and value.isascii() and value.isdigit() and int(value) > 50:
            value = "50"  # a valid long wait holds a connection for seconds: kept short here
        pairs.append(quote(name, safe="") + "=" + quote(value, safe=""))
    query = "&".join(pairs) + draw(QUERY_JUNK)
    return "?" + query if query else ""


# ----- headers and bodies --------------------------------------------------------------------

header_values = st.one_of(
    st.sampled_from(["gzip", "br", "deflate", "identity", "gzip, gzip", "x", "*", ""]),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60),
    st.text(alphabet=st.characters(min_codepoint=0xA0, max_codepoint=0xFF), max_size=10),
)
headers = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "Accept-Encoding",
                "Content-Encoding",
                "Content-Type",
                "Accept",
                "X-Blob-Signature",
                "X-Request-Signature",
                "Cookie",
                "Expect",
                "X-Forwarded-For",
                "Range",
                "If-None-Match",
            ]
        ),
        header_values,
    ),
    max_size=4,
)


def nested(depth: int, kind: int) -> bytes:
    if kind == 0:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


RANDOM_BYTES = st.binary(max_size=600)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.floats(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def _mutate(data: bytes, how: int, where: int) -> bytes:
    if not data:
        return data
    at = where % len(data)
    if how == 0:
        return data[:at]  # truncated
    if how == 1:
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]  # one bit flipped
    if how == 2:
        return data + data[at:]  # trailing garbage
    return data[:at] + b"\n\n\xe2\x80\x94 x\n" + data[at:]  # a signature-like line inside


HUGE = st.sampled_from([65_535, 65_536, 70_000, 262_145, 1 << 20, (1 << 20) + 1])
DEPTHS = st.sampled_from([33, 600, 5000, 100_000])
SEEDS = st.integers(0, 1 << 30)
ANYWHERE = st.integers(0, 1 << 16)
MUTATIONS = st.integers(0, 3)


def _body(draw: st.DrawFn, kind: str | None, samples: Samples) -> bytes:
    choice = draw(st.integers(0, 9))
    if choice == 0:
        return b""
    if choice == 1:  # huge: around the limits of entries, recipes and requests
        return random.Random(draw(SEEDS)).randbytes(draw(HUGE))
    if choice == 2:
        return nested(draw(DEPTHS), draw(st.integers(0, 1)))
    if choice == 3:
        return json.dumps(draw(json_values)).encode()
    if choice == 4 and samples.notes:  # a real note, truncated or mutated
        note = samples.notes[draw(st.integers(0, len(samples.notes) - 1))]
        return _mutate(note, draw(MUTATIONS), draw(ANYWHERE))
    if choice == 5 and samples.entries:  # a real protocol entry, mutated
        entry = samples.entries[draw(st.integers(0, len(samples.entries) - 1))]
        return _mutate(entry, draw(MUTATIONS), draw(ANYWHERE))
    if choice == 6 and kind == "envelope":
        sender, length = draw(st.integers(0, 70_000)), draw(st.integers(0, 2**32 - 1))
        head = struct.pack(">HQI", sender % 65_536, int(time.time() * 1000), length)
        return head + draw(st.binary(max_size=300)) + draw(st.binary(min_size=64, max_size=64))
    if choice == 7 and kind == "add-checkpoint" and samples.notes:
        old = draw(numbers)
        proof = [
            base64.b64encode(draw(st.binary(min_size=31, max_size=33))).decode()
            for _ in range(draw(st.integers(0, 3)))
        ]
        note = samples.notes[draw(st.integers(0, len(samples.notes) - 1))]
        return ("\n".join([f"old {old}", *proof]) + "\n\n").encode() + note
    return draw(RANDOM_BYTES)


# ----- requests ------------------------------------------------------------------------------

FRAMINGS = ["exact"] * 6 + ["short", "long", "bad", "twice", "chunked", "bad-chunked", "both"]


def _chunked(body: bytes, cut: int) -> bytes:
    pieces = [body[i : i + cut] for i in range(0, len(body), cut)] if body else []
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


ANY_METHOD = st.sampled_from(METHODS)
FRAMING = st.sampled_from(FRAMINGS)


def requests(routes: Sequence[Route], samples: Samples) -> st.SearchStrategy[FuzzRequest]:
    """Hostile requests to ``routes``, with bodies made from ``samples``."""
    plans = [
        (
            route,
            st.one_of(st.sampled_from(route.methods), ANY_METHOD),
            st.one_of(st.sampled_from(route.params or ("x",)), st.text(max_size=8)),
        )
        for route in routes
    ]

    @st.composite
    def one(draw: st.DrawFn) -> FuzzRequest:
        route, methods, names = plans[draw(st.integers(0, len(plans) - 1))]
        return _request(draw, route, draw(methods), names, samples)

    return one()


def _request(
    draw: st.DrawFn, route: Route, method: str, names: st.SearchStrategy[str], samples: Samples
) -> FuzzRequest:
    target = (_path(draw, route) + _query(draw, names)).encode("utf-8", "surrogatepass")
    body = _body(draw, route.body, samples) if method in ("POST", "PUT", "PATCH") else b""
    if method not in ("POST", "PUT", "PATCH") and draw(st.integers(0, 9)) == 0:
        body = draw(st.binary(max_size=100))  # a GET with a body
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: test"]
    lines += [n.encode() + b": " + v.encode("latin-1") for n, v in draw(headers)]
    framing = draw(FRAMING)
    lies_long = False
    if framing == "short" and body:
        lines.append(b"Content-Length: %d" % draw(st.integers(0, len(body) - 1)))
    elif framing == "long":
        lines.append(b"Content-Length: %d" % (len(body) + draw(st.integers(1, 1 << 22))))
        lies_long = True
    elif framing == "bad":
        # Values no HTTP parser reads as a length (" 5" would be 5: whitespace is not part
        # of a header's value, and "5, 5" may be read as 5).
        bad = draw(st.sampled_from(["²", "-1", "1e3", "0x10", "abc", "1 1", "99" * 15]))
        lines.append(b"Content-Length: " + bad.encode())
    elif framing == "twice":  # a parser may take the second: then it waits for one more byte
        lines += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + 1)]
        lies_long = True
    elif framing in ("chunked", "bad-chunked", "both"):
        lines.append(b"Transfer-Encoding: chunked")
        if framing == "both":
            lines.append(b"Content-Length: %d" % len(body))
        cut = draw(st.integers(1, 4096))
        body = _chunked(body, cut) if framing != "bad-chunked" else b"zz\r\n" + body
    elif body or method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: %d" % len(body))
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    return FuzzRequest(route, method, target, raw, lies_long)


# ----- the driver ----------------------------------------------------------------------------


def judge(request: FuzzRequest, answer: RawResponse | None) -> str | None:
    """What is wrong with ``answer`` to ``request``, or None if it keeps the rules."""
    if answer is None:
        return None if request.lies_long else "no answer"
    status, kind = answer.status, answer.content_type
    if status >= 500:
        return f"answered {status}: {answer.body[:300]!r}"
    if not 400 <= status < 500:
        return None
    if request.route.html and request.method == "GET" and kind.startswith("text/html"):
        return None if answer.body else f"an empty HTML {status}"
    if request.route.template == "/add-checkpoint" and (status, kind) == (409, SIZE_TYPE):
        return None  # c2sp.org/tlog-witness fixes this answer's body and type
    if kind != PROBLEM:
        return f"a {status} in {kind!r}: {answer.body[:200]!r}"
    if request.method == "HEAD":
        return None  # no body to check
    try:
        problem = json.loads(answer.body)
    except ValueError:
        return f"a {status} problem that is not JSON: {answer.body[:200]!r}"
    detail = problem.get("detail") if isinstance(problem, dict) else None
    if not isinstance(detail, str) or not detail or problem.get("status") != status:
        return f"a {status} problem without a detail or with another status: {problem!r}"
    return None


@dataclass
class Fuzzer:
    """Sends batches of requests to one server over ``connections`` keep-alive connections."""

    url: str
    connections: int = 32
    timeout: float = 15.0
    sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(self.connections, thread_name_prefix="fuzz")
        self._all: list[Connection] = []

    def close(self) -> None:
        self._pool.shutdown()
        for conn in self._all:
            conn.close()

    def _connection(self) -> Connection:
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = Connection(self.url, self.timeout)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def _exchange(self, request: FuzzRequest) -> RawResponse | None:
        conn = self._connection()
        conn.close()  # one connection a request: a lie leaves the connection in any state
        conn.timeout = LIE_WAIT if request.lies_long else self.timeout
        with contextlib.suppress(OSError):  # it may answer and close before taking it all
            conn.send(request.raw)
        try:
            return conn.read(head=request.method == "HEAD")
        except (NoResponse, TimeoutError, ConnectionError):
            return None
        finally:
            conn.close()

    def _one(self, request: FuzzRequest) -> str | None:
        answer = self._exchange(request)
        with self._lock:
            self.sent += 1
        problem = judge(request, answer)
        return None if problem is None else f"{request!r}: {problem}"

    def run(self, batch: Sequence[FuzzRequest]) -> list[str]:
        """Send ``batch`` (``connections`` at a time); what broke the rules, if anything."""
        return [p for p in self._pool.map(self._one, batch) if p is not None]


def alive(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``check`` until it holds or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False
