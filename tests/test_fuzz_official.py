"""Property-based fuzzing of every HTTP route (the official ones in bridge/server/official/ and our own) against
a real server, on both backends.

Each example is one request to one route: its path ids (known, forged, hostile), query (offset, handle,
live, tags, createdAt, skipColumns...), headers (Authorization forms, Content-Type, Last-Event-ID,
Timeout-Seconds, the idempotency key...) and body (well-formed but hostile JSON, padded to the size limits,
NDJSON, garbage, chunked without a length), or a raw request whose Content-Length does not match its body.
The property:

- no 5xx; a 4xx carries the documented JSON error (`{"error": ..., "code": ...}`; a feed's 409 the Electric
  `must-refetch` array); a 2xx only for a token (or callback signature) that grants it;
- every response ends within a bound: a long-poll after its hold (0.5 s here), an SSE response of a finished
  run after its chunks. An SSE response of a run still executing may stay open: it must send its chunks or a
  ping at once (pings every 0.2 s here), and end when the client leaves;
- afterwards no request is still served (`settled`), `/healthz` answers, and nothing is logged as an error
  ("Exception in ASGI application" included).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bridge.config import Limits, Settings
from bridge.models import MAX_JSON_DEPTH, RunStatus
from bridge.server.official import streams as sse
from bridge.server.official.inputs import MAX_INPUT_BODY_BYTES
from bridge.server.official.waitpoints import MAX_CREATE_BODY_BYTES
from tests.conftest import RunningServer
from tests.support.fuzz import (
    COMPLETE_TOKEN,
    DEEP,
    LIVE_RUN_CHUNKS,
    READ_RUN,
    STREAM_KEY,
    WRITE_ANY,
    WRITE_INPUTS,
    Known,
    RawJson,
    World,
    captured_logs,
    either,
    encode_json,
    fuzzed_world,
    hostile,
    json_values,
    may_read_batch,
    may_read_tags,
    mostly,
    nested,
    nested_value,
    rights,
    settled,
    stored_chunks,
    texts,
    tokens,
)
from tests.support.helpers import bearer, server_with, until_final
from tests.support.ws_client import connect, of_type

HOLD_SECONDS = 0.5  # the long-poll hold of the server under test (20 s by default)
PING_SECONDS = 0.2  # its SSE ping interval (10 s by default)
RESPONSE_SECONDS = 10.0  # every response ends within this (a live SSE response: its first event)
MAX_REQUEST = Limits().max_request_bytes  # the test servers'
UVICORN_BAD_REQUEST = b"Invalid HTTP request received."  # uvicorn's own answer to what is not HTTP/1.1


@dataclass(frozen=True)
class Auth:
    """An Authorization header: `scheme` then the token (a `Known` one or any text)."""

    scheme: str
    token: Any

    @property
    def presented(self) -> Any:
        """The token the server reads from it (`Bearer <token>`, any case), else None."""
        bearer = self.scheme.rstrip(" ").lower() == "bearer" and self.scheme != self.scheme.rstrip(" ")
        return self.token if bearer else None


SECRET = Auth("Bearer ", Known.SECRET_KEY)


@dataclass(frozen=True)
class Chunked:
    """A body sent without Content-Length (Transfer-Encoding: chunked)."""

    data: bytes


@dataclass(frozen=True)
class Sized:
    """A body of exactly `size` bytes: `{"<field>": "xxx..."}` (by default a field no route knows)."""

    size: int
    field: str = "pad"

    def encode(self) -> bytes:
        start = b'{"' + self.field.encode() + b'": "'
        return start + b"x" * (self.size - len(start) - 2) + b'"}'


@dataclass(frozen=True)
class Request:
    method: str
    path: tuple[Any, ...]  # segments: text (percent-encoded on the way) or `Known`
    params: tuple[tuple[str, Any], ...] = ()
    headers: tuple[tuple[str, Any], ...] = ()
    auth: Auth | None = None
    body: Any = None  # None, bytes, `Chunked`, `Sized`, `RawJson`, or a JSON value with `Known` inside

    @property
    def key(self) -> Any:
        """The credential that may grant a 2xx: the bearer token, or the callback URL's signature."""
        match self.path:
            case ("api", "v1", "waitpoints", "tokens", _, "callback", signature):
                return signature
        return self.auth.presented if self.auth else None

    @property
    def grants(self) -> frozenset[Any] | None:
        """The credentials that may get a 2xx (docs/official-protocol.md), by the route the path matches; None:
        no credentials needed."""
        match self.path:
            case ("healthz",) | ("readyz",):
                return None
            case ("realtime", "v1", "runs"):
                return may_read_tags(next((list(v) for k, v in self.params if k == "tags"), None))
            case ("realtime", "v1", "runs", run) | ("realtime", "v1", "streams", run, _) | ("api", "v3", "runs", run):
                return rights(READ_RUN, run)
            case ("realtime", "v1", "batches", batch):
                return may_read_batch(batch)
            case ("realtime", "v1", "streams", run, "input", _):
                return rights(WRITE_INPUTS, run)
            case ("api", "v1", "tasks", task, "trigger"):
                return WRITE_ANY | ({Known.TRIGGER_ECHO_ONCE} if task == "echo" else set())
            case ("api", "v1", "auth", "jwt", "claims"):
                return frozenset({Known.SECRET_KEY})
            case ("api", "v1", "waitpoints", "tokens", token_id, *rest) if rest in ([], ["complete"]):
                return COMPLETE_TOKEN if token_id is Known.WAIT_TOKEN else WRITE_ANY
            case ("api", "v1", "waitpoints", "tokens", token_id, "callback", _):
                return frozenset({Known.CALLBACK_SIGNATURE} if token_id is Known.WAIT_TOKEN else ())
        return WRITE_ANY  # creating a batch or a wait token, adding batch items, cancelling; nothing on 404s


# strategies

header_values = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), max_size=60).map(
    lambda text: text.strip(" \t")  # h11 refuses control characters and surrounding blanks before sending
)
auths = st.builds(
    Auth,
    mostly(
        st.just("Bearer "),
        st.sampled_from(["bearer ", "BEARER ", "Bearer  ", "Bearer", "Basic ", "", "Token ", "Bearer\t"]),
    ),
    mostly(tokens, st.one_of(header_values, st.sampled_from(["a" * 16_385, "x.y.z", "null"]))),
)
maybe_auth = mostly(auths, st.none())
run_refs = mostly(
    st.sampled_from([Known.FINISHED_RUN, Known.LIVE_RUN, Known.UNKNOWN_RUN, Known.DEEP_RUN]), st.sampled_from(Known)
)
path_texts = st.one_of(
    texts, st.sampled_from(["..", ".", "%2F", "a/b", "run_%00", "r" * 4000, "{}", "*", "\u202e", "run_' OR 1=1 --"])
)


def segment(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return mostly(good, path_texts)


def optional(name: str, values: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[tuple[str, Any], ...]]:
    """`(name, value)` or nothing."""
    return st.one_of(st.just(()), values.map(lambda value: ((name, value),)))


def json_body(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A JSON object of some of `fields` (and now and then unknown ones), or another JSON value, or garbage."""
    objects = st.builds(
        lambda values, extra: {**extra, **{k: v for k, v in values.items() if v is not None}},
        st.fixed_dictionaries({}, optional={name: strategy for name, strategy in fields.items()}),
        mostly(st.just({}), st.dictionaries(texts, json_values, max_size=2)),
    )
    return mostly(objects, st.one_of(hostile, garbage_bodies))


garbage_bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b"\xff\xfe", b"{", b"[" * 2000, b'{"a": "\\ud800"}', b"\x00" * 10, b"null", b"1e400"]),
    DEEP.map(lambda deep: RawJson('{"data":' + deep.text + "}")),
    st.binary(max_size=100).map(Chunked),
)
common_headers = st.lists(
    st.one_of(
        st.tuples(st.just("Content-Type"), st.sampled_from(["application/json", "text/plain", "multipart/form-data"])),
        st.tuples(st.just("Content-Type"), header_values),
        st.tuples(st.just("Origin"), st.sampled_from(["http://example.com", "null", ""])),
        st.tuples(st.just("Access-Control-Request-Method"), st.sampled_from(["GET", "POST", "DELETE", "BREW"])),
        st.tuples(st.just("Content-Encoding"), st.sampled_from(["gzip", "br", "identity"])),
        st.tuples(st.just("Accept"), st.sampled_from(["text/event-stream", "*/*", "application/json"])),
        st.tuples(st.sampled_from(["x-fuzz", "If-None-Match", "Range", "Cookie"]), header_values),
    ),
    max_size=3,
)
idempotency_headers = optional(
    "x-trigger-request-idempotency-key", either(["k1", "k2", "k" * 2048, "3f1c-uuid"], ["", "k" * 2049, " k"])
)


def feed_params(tags: bool = False) -> st.SearchStrategy[tuple[tuple[str, Any], ...]]:
    offsets = either(["-1", "0_0", "1_0", "2_0"], ["now", "1", "-2", "9" * 500 + "_0", "%FF", "", "1_0_0"])
    handles = either([Known.FEED_HANDLE], ["feed_x", "", "\x00", "h" * 5000])
    parts = [
        optional("offset", offsets),
        optional("handle", handles),
        optional("live", either(["true", "false"], ["TRUE", "1", "", "maybe"])),
        optional("skipColumns", either(["", "payload,output", "id,status"], [",,," * 1000, "\x00", "nope"])),
        optional("cursor", st.one_of(st.sampled_from(["0", "-1", "9" * 100]), header_values)),
    ]
    if tags:
        tag_lists = either(
            [[Known.TAG], [Known.TAG, "other"], ["t" * 128]],
            [[], ["t" * 129], [f"t{i}" for i in range(11)], ["a\x00b"], [",,"]],
        )
        parts += [
            optional("tags", tag_lists.map(tuple)),
            optional("createdAt", either(["1h", "1d", "7d", "3600", "2w"], ["-5m", "1e9999s", "9" * 400 + "w", ""])),
        ]
    return st.tuples(*parts).map(lambda groups: tuple(item for group in groups for item in group))


@st.composite
def run_feed(draw: st.DrawFn) -> Request:
    run = draw(segment(run_refs))
    return Request("GET", ("realtime", "v1", "runs", run), draw(feed_params()))


@st.composite
def tag_feed(draw: st.DrawFn) -> Request:
    return Request("GET", ("realtime", "v1", "runs"), draw(feed_params(tags=True)))


@st.composite
def batch_feed(draw: st.DrawFn) -> Request:
    batch = draw(segment(st.sampled_from([Known.BATCH, Known.OPEN_BATCH, "batch_" + "0" * 24])))
    return Request("GET", ("realtime", "v1", "batches", batch), draw(feed_params()))


@st.composite
def read_stream(draw: st.DrawFn) -> Request:
    run = draw(segment(run_refs))
    key = draw(segment(either([STREAM_KEY, "default", "k" * 64], ["$in:approval", "k" * 65, " ", "%00"])))
    last_ids = either(
        ["-1", "0", "1", "2", "3", str(2**53 - 2)], [str(2**53 - 1), "-2", "²", "1_0", "+1", "9" * 5000, "", "a"]
    )
    headers = draw(
        st.tuples(
            optional("Last-Event-ID", last_ids),
            optional("Timeout-Seconds", either(["1", "2", "600"], ["0", "601", "²", "9" * 5000, "-1", "1.5", "٣"])),
            optional("x-trigger-stream-start", st.sampled_from(["latest", "LATEST", "earliest", ""])),
        )
    )
    return Request(
        "GET",
        ("realtime", "v1", "streams", run, key),
        headers=tuple(item for group in headers for item in group),
    )


@st.composite
def send_input(draw: st.DrawFn) -> Request:
    run = draw(segment(st.sampled_from([Known.LIVE_RUN, Known.FINISHED_RUN, Known.UNKNOWN_RUN])))
    stream = draw(segment(either(["approval", "items", "s" * 64], ["s" * 65, "$in:x"])))
    body = draw(
        st.one_of(
            json_body(data=st.one_of(json_values, DEEP)),
            st.sampled_from([Sized(MAX_INPUT_BODY_BYTES + delta, "data") for delta in (-1, 0, 1)]),
            st.binary(max_size=100).map(Chunked),
        )
    )
    return Request(
        "POST",
        ("realtime", "v1", "streams", run, "input", stream),
        headers=draw(idempotency_headers),
        body=body,
    )


options = st.fixed_dictionaries(
    {},
    optional={
        "payloadType": either(["application/json", "application/super+json", "text/plain"], ["application/store", ""]),
        "tags": mostly(st.lists(st.sampled_from(["a", "b", "t" * 128]), max_size=10), hostile),
        "idempotencyKey": either(["k1", "k" * 2048], ["k" * 2049, 5, ""]),
        "idempotencyKeyTTL": either(["1h", "30s", 60], ["-1m", "x", True]),
        "metadata": mostly(st.dictionaries(texts, json_values, max_size=3), st.one_of(hostile, DEEP)),
        "metadataType": st.sampled_from(["application/json", "application/super+json", "text/plain"]),
        "test": st.booleans(),
        "maxAttempts": either([1, 3, 100], [0, 101, -1, 1.5, True, "3"]),
    },
)
payloads = st.one_of(json_values, DEEP, st.sampled_from(['{"json": 1}', "[1]", "not json", '{"json": "\\ud800"}']))


@st.composite
def trigger(draw: st.DrawFn) -> Request:
    task = draw(segment(either(["echo", "fail"], ["nope", "wait-for-gate "])))
    body = draw(st.one_of(json_body(payload=payloads, options=mostly(options)), st.sampled_from(SIZED_REQUESTS)))
    return Request("POST", ("api", "v1", "tasks", task, "trigger"), headers=draw(idempotency_headers), body=body)


SIZED_REQUESTS = [Sized(size) for size in (MAX_REQUEST - 1, MAX_REQUEST, MAX_REQUEST + 1)]


@st.composite
def create_batch(draw: st.DrawFn) -> Request:
    body = json_body(
        runCount=st.one_of(
            either([1, 2, 500], [0, 501, -1, 1.5, True, "1"]), st.sampled_from([RawJson("1e400"), RawJson("1" * 30)])
        ),
        taskIdentifiers=mostly(st.lists(st.sampled_from(["echo", "fail", "nope"]), max_size=3), hostile),
    )
    return Request("POST", ("api", "v3", "batches"), body=draw(body))


batch_items = st.fixed_dictionaries(
    {"task": either(["echo"], ["fail", "nope", 5])},
    optional={
        "index": either(list(range(20)), [20, -1, 1.5, True, "0", 2**64 - 1]),
        "payload": payloads,
        "options": options,
    },
)


@st.composite
def add_batch_items(draw: st.DrawFn) -> Request:
    batch = draw(segment(either([Known.OPEN_BATCH], [Known.BATCH, "batch_" + "0" * 24])))
    lines = draw(
        st.lists(
            mostly(
                batch_items.map(lambda item: encode_json(item).encode()),
                st.one_of(st.binary(max_size=50), DEEP.map(lambda d: d.text.encode())),
            ),
            max_size=4,
        )
    )
    separator = draw(st.sampled_from([b"\n", b"\r\n", b"\n\n"]))
    body = draw(mostly(st.just(separator.join(lines)), st.one_of(garbage_bodies, st.sampled_from(SIZED_REQUESTS))))
    return Request("POST", ("api", "v3", "batches", batch, "items"), body=body)


@st.composite
def retrieve_run(draw: st.DrawFn) -> Request:
    run = draw(segment(run_refs))
    return Request("GET", ("api", "v3", "runs", run))


@st.composite
def cancel_run(draw: st.DrawFn) -> Request:
    # Not the live run: its open SSE responses are part of the property.
    run = draw(segment(st.sampled_from([Known.SPARE_RUN, Known.FINISHED_RUN, Known.UNKNOWN_RUN])))
    return Request("POST", ("api", "v2", "runs", run, "cancel"), body=draw(st.none() | garbage_bodies))


@st.composite
def jwt_claims(draw: st.DrawFn) -> Request:
    return Request("POST", ("api", "v1", "auth", "jwt", "claims"), body=draw(json_body()))


@st.composite
def create_token(draw: st.DrawFn) -> Request:
    body = json_body(
        idempotencyKey=either(["k1", "k" * 2048], ["k" * 2049, 5]),
        idempotencyKeyTTL=either(["1h", "10m"], ["-1h", 60, "x"]),
        timeout=either(["10m", "2h", "2030-01-01T00:00:00Z", "1999-01-01T00:00:00Z"], ["366d", "x", 60, ""]),
        tags=mostly(
            st.lists(st.sampled_from(["a", "b", "t" * 128]), max_size=10), st.one_of(hostile, st.just(["t"] * 11))
        ),
    )
    sized = st.sampled_from([Sized(MAX_CREATE_BODY_BYTES), Sized(MAX_CREATE_BODY_BYTES + 1)])
    return Request("POST", ("api", "v1", "waitpoints", "tokens"), body=draw(st.one_of(body, sized)))


wait_token_refs = segment(either([Known.WAIT_TOKEN], ["waitpoint_" + "0" * 24, Known.LIVE_RUN]))


@st.composite
def retrieve_token(draw: st.DrawFn) -> Request:
    return Request("GET", ("api", "v1", "waitpoints", "tokens", draw(wait_token_refs)))


@st.composite
def complete_token(draw: st.DrawFn) -> Request:
    body = draw(json_body(data=st.one_of(json_values, DEEP), output=json_values))
    return Request("POST", ("api", "v1", "waitpoints", "tokens", draw(wait_token_refs), "complete"), body=body)


@st.composite
def callback(draw: st.DrawFn) -> Request:
    token_id = draw(wait_token_refs)
    signature = draw(segment(either([Known.CALLBACK_SIGNATURE], ["0" * 64, "", "zz"])))
    body = draw(st.one_of(json_values, garbage_bodies, st.sampled_from([b"", b"  ", SIZED_REQUESTS[-1]])))
    return Request("POST", ("api", "v1", "waitpoints", "tokens", token_id, "callback", signature), body=body)


@st.composite
def health(draw: st.DrawFn) -> Request:
    return Request("GET", (draw(st.sampled_from(["healthz", "readyz"])),))


@st.composite
def unknown_route(draw: st.DrawFn) -> Request:
    path = draw(
        st.lists(segment(st.sampled_from(["api", "v1", "realtime", "runs", "streams"])), min_size=1, max_size=5)
    )
    return Request("GET", tuple(path))


ROUTES = [
    run_feed(),
    tag_feed(),
    batch_feed(),
    read_stream(),
    send_input(),
    trigger(),
    create_batch(),
    add_batch_items(),
    retrieve_run(),
    cancel_run(),
    jwt_claims(),
    create_token(),
    retrieve_token(),
    complete_token(),
    callback(),
    health(),
    unknown_route(),
]


@st.composite
def requests(draw: st.DrawFn) -> Request:
    request: Request = draw(draw(st.sampled_from(ROUTES)))
    methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"])
    return Request(
        method=draw(mostly(st.just(request.method), methods)),
        path=request.path,
        params=request.params,
        headers=request.headers + tuple(draw(common_headers)),
        auth=draw(maybe_auth),
        body=request.body,
    )


# checking what comes back


def url_of(request: Request, world: World) -> str:
    return "/" + "/".join(quote(str(world.resolve(part)), safe="") for part in request.path)


def params_of(request: Request, world: World) -> list[tuple[str, str]]:
    resolved = [(name, world.resolve(value)) for name, value in request.params]
    return [(name, ",".join(value) if isinstance(value, list) else str(value)) for name, value in resolved]


def headers_of(request: Request, world: World) -> list[tuple[str, bytes]]:
    headers = [(name, str(world.resolve(value))) for name, value in request.headers]
    if request.auth is not None:
        headers.append(("Authorization", request.auth.scheme + str(world.resolve(request.auth.token))))
    return [(name, value.strip(" \t").encode()) for name, value in headers]  # h11 sends no surrounding blanks


def content_of(request: Request, world: World) -> Any:
    body = request.body
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, Sized):
        return body.encode()
    if isinstance(body, Chunked):

        async def chunks() -> AsyncIterator[bytes]:
            yield body.data

        return chunks()
    return encode_json(world.resolve(body)).encode()


def route_name(request: Request) -> str:
    """For hypothesis' statistics: the route's fixed words."""
    return "/".join(part for part in request.path if isinstance(part, str) and part.isalpha() and len(part) < 12)


def is_stream(request: Request) -> bool:
    return request.path[:3] == ("realtime", "v1", "streams") and len(request.path) == 5


def stream_start(request: Request) -> int:
    """The first chunk index a stream request asks for (the header checks passed: it was answered 200)."""
    headers = {name.lower(): value for name, value in request.headers}
    if "last-event-id" in headers:
        return int(headers["last-event-id"]) + 1
    if headers.get("x-trigger-stream-start", "").lower() == "latest":  # the stream's length
        stored = stored_chunks(request.path[3], request.path[4])
        if stored is not None:
            return stored
        return LIVE_RUN_CHUNKS if request.path[4] == STREAM_KEY else 0
    return 0


def sse_events(body: bytes) -> list[tuple[int, Any] | None]:
    """The events of an SSE body: (index, data) per chunk, None per ping; asserts nothing else is in it."""
    events: list[tuple[int, Any] | None] = []
    for block in body.split(b"\n\n")[:-1]:
        if block == b": ping":
            events.append(None)
            continue
        id_line, data_line = block.split(b"\n")
        assert id_line.startswith(b"id: ") and data_line.startswith(b"data: "), block
        events.append((int(id_line[4:]), orjson.loads(data_line[6:])))
    assert body.endswith(b"\n\n") or not body, body[-100:]
    return events


async def exchange(http: httpx.AsyncClient, request: Request, world: World) -> None:
    """One request, its answer read within RESPONSE_SECONDS (for a live stream: its first event, then it leaves)."""
    async with asyncio.timeout(RESPONSE_SECONDS):
        async with http.stream(
            request.method,
            url_of(request, world),
            params=params_of(request, world),
            headers=headers_of(request, world),
            content=content_of(request, world),
        ) as response:
            status = response.status_code
            event(f"{route_name(request)} {request.method} -> {status}")
            assert status < 500, (status, await response.aread())
            grants = request.grants
            if 200 <= status < 300 and not is_preflight(request) and grants is not None:  # a preflight reads nothing
                assert request.key in grants, f"{status} for {request.key}: {request}"
            live = is_stream(request) and request.path[3] is Known.LIVE_RUN and status == 200
            if live and request.method == "GET":
                first = b""
                async for part in response.aiter_raw():
                    first += part
                    if b"\n\n" in first:
                        break
                (event_,) = sse_events(first[: first.index(b"\n\n") + 2])
                start = stream_start(request)
                assert event_ == ((start, start) if start < LIVE_RUN_CHUNKS and request.path[4] == STREAM_KEY else None)
                return  # leaving: the server ends the response (`settled` checks)
            body = await response.aread()
    check_body(request, response, body)


def is_preflight(request: Request) -> bool:
    """A CORS preflight: Starlette's CORS middleware answers it (in plain text; browsers read its headers only)."""
    names = {name.lower() for name, _ in request.headers}
    return request.method == "OPTIONS" and {"origin", "access-control-request-method"} <= names


def check_body(request: Request, response: httpx.Response, body: bytes) -> None:
    status = response.status_code
    if request.method == "HEAD" or is_preflight(request) or status in (204, 304) or 300 <= status < 400:
        return
    content_type = response.headers.get("content-type", "")
    if status >= 400:
        assert content_type.startswith("application/json"), (status, content_type, body[:300])
        parsed = orjson.loads(body)
        feed = request.path[:2] == ("realtime", "v1") and not is_stream(request)
        if status == 409 and feed:
            assert parsed == [{"headers": {"control": "must-refetch"}}], parsed
        else:
            assert isinstance(parsed, dict) and isinstance(parsed.get("error"), str), parsed
            assert isinstance(parsed.get("code"), str), parsed
        return
    if content_type.startswith("text/event-stream"):
        events = sse_events(body)
        chunks = stored_chunks(request.path[3], request.path[4])
        if chunks is not None:
            assert [e for e in events if e is not None] == [(i, i) for i in range(stream_start(request), chunks)]
        return
    assert content_type.startswith("application/json"), (status, content_type, body[:300])
    orjson.loads(body)


@pytest.fixture
async def fuzz_server(backend_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningServer]:
    """A server whose long-polls and SSE pings are quick, so every example's bound is short."""
    monkeypatch.setattr(sse, "PING_INTERVAL_SECONDS", PING_SECONDS)
    async with server_with(backend_settings, live_poll_hold_seconds=HOLD_SECONDS) as server:
        yield server


@pytest.fixture
async def world(fuzz_server: RunningServer) -> AsyncIterator[World]:
    async with fuzzed_world(fuzz_server) as made:
        yield made


@pytest.fixture
async def client(fuzz_server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fuzz_server.url, timeout=RESPONSE_SECONDS) as http:
        yield http


@contextlib.asynccontextmanager
async def checked(server: RunningServer, http: httpx.AsyncClient) -> AsyncIterator[None]:
    """After the block: no request still served, /healthz answers, nothing logged as an error."""
    with captured_logs() as logs:
        yield
        await settled(server)
        assert (await http.get("/healthz")).status_code == 200
    assert logs.take() == []


# One server and world per test function, shared by its examples on purpose: a function-scoped fixture.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(requests())
# Found by this test, fixed: a HEAD on a running run's stream held its reader, and the connection, open.
@example(Request("HEAD", ("realtime", "v1", "streams", Known.LIVE_RUN, STREAM_KEY), auth=SECRET))
# Found by this test, fixed: an unknown route or a wrong method answered JSON without a code.
@example(Request("GET", ("api", "v3", "batches"), auth=SECRET))
@example(  # a preflight for a method no route serves: plain text from the CORS middleware, no 5xx
    Request("OPTIONS", ("api", "v3", "runs"), headers=(("Origin", "x"), ("Access-Control-Request-Method", "BREW")))
)
# Found by this test, fixed: a token that may batch-trigger nothing created batches, and added no items with a 200.
@example(Request("POST", ("api", "v3", "batches"), auth=Auth("Bearer ", Known.READ_FINISHED_RUN), body={"runCount": 1}))
@example(Request("POST", ("api", "v3", "batches", Known.OPEN_BATCH, "items"), auth=Auth("Bearer ", Known.READ_TAG)))
# Found by probing the nesting the fuzzers draw, fixed: a payload 254 levels deep could not be stored (a 500).
@example(Request("POST", ("api", "v1", "tasks", "echo", "trigger"), auth=SECRET, body={"payload": nested(254)}))
async def test_every_request_gets_a_bounded_answer_that_is_no_5xx_and_leaks_nothing(
    fuzz_server: RunningServer, world: World, client: httpx.AsyncClient, request: Request
) -> None:
    async with checked(fuzz_server, client):
        await exchange(client, request, world)


# Content-Length (and Transfer-Encoding) that httpx would not send: raw requests


@dataclass(frozen=True)
class Framing:
    """How a raw request declares its body: Content-Length values (relative to the body, or as given),
    and whether it also says Transfer-Encoding: chunked."""

    lengths: tuple[int | str, ...]
    chunked: bool = False

    def head(self, body: bytes) -> bytes:
        declared = [str(len(body) + v) if isinstance(v, int) else v for v in self.lengths]
        lines = [f"Content-Length: {value}" for value in declared]
        if self.chunked:
            lines.append("Transfer-Encoding: chunked")
        return "".join(line + "\r\n" for line in lines).encode()


relative_lengths = st.sampled_from([0, -1, 1, 2, 100, -(10**6)])
odd_lengths = st.sampled_from(["", "abc", "²", "-1", "+5", " 5", "9" * 30, "1_0", "0x10", "5, 5", "٣"])
framings = mostly(
    st.builds(Framing, st.tuples(relative_lengths)),
    st.builds(Framing, st.lists(st.one_of(relative_lengths, odd_lengths), max_size=2).map(tuple), st.booleans()),
)
POST_ROUTES = [
    send_input(),
    trigger(),
    create_batch(),
    add_batch_items(),
    cancel_run(),
    create_token(),
    complete_token(),
]


def body_bytes(request: Request, world: World) -> bytes:
    """The body as raw bytes: what `Framing` declares the length (or chunking) of."""
    if isinstance(request.body, Chunked):
        return request.body.data
    return content_of(request, world) or b""


async def raw_exchange(server: RunningServer, request: Request, framing: Framing, world: World) -> list[int]:
    """Sends `request` as raw bytes with `framing`, then ends its side; the statuses of every answer."""
    query = "&".join(f"{quote(name)}={quote(value)}" for name, value in params_of(request, world))
    target = url_of(request, world) + (f"?{query}" if query else "")
    head = [f"{request.method} {target} HTTP/1.1".encode(), b"Host: bridge"]
    head += [name.encode() + b": " + value for name, value in headers_of(request, world)]
    body = body_bytes(request, world)
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"\r\n".join(head) + b"\r\n" + framing.head(body) + b"\r\n" + body)
        writer.write_eof()  # no more: a shorter body than declared is a client gone mid-body
        answer = b""
        async with asyncio.timeout(RESPONSE_SECONDS):
            with contextlib.suppress(ConnectionResetError):  # closed with our bytes unread: a reset, not a FIN
                while part := await reader.read(65536):  # until the server closes
                    answer += part
    finally:
        writer.close()
    statuses = [int(line[9:12]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
    event(f"raw {route_name(request)} -> {statuses}")
    first = answer.split(b"\r\n\r\n", 1)
    if statuses and 400 <= statuses[0] < 500 and len(first) == 2 and not first[1].startswith(UVICORN_BAD_REQUEST):
        assert b"content-type: application/json" in first[0].lower(), answer[:500]
    return statuses


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.sampled_from(POST_ROUTES).flatmap(lambda route: route), framings)
@example(  # a body cut short of its Content-Length: the client is gone, nothing is logged as our bug
    Request("POST", ("api", "v1", "tasks", "echo", "trigger"), auth=SECRET, body=b"{}"),
    Framing((100,)),
)
async def test_a_body_that_does_not_match_its_length_is_refused_without_a_5xx(
    fuzz_server: RunningServer, world: World, client: httpx.AsyncClient, request: Request, framing: Framing
) -> None:
    async with checked(fuzz_server, client):
        statuses = await raw_exchange(fuzz_server, request, framing, world)
    assert all(status < 500 for status in statuses), statuses


# Found by fuzzing (payloads nested 251 to 254 levels were accepted, then broke the run's storage, its worker
# and every snapshot of it): a value nested to the bound travels every protocol, one level more is refused.


async def test_a_value_nested_to_the_bound_is_served_everywhere_and_one_level_deeper_is_refused(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    secret = server.settings.secret_key
    payload = {"steps": 1, "deep": nested_value(MAX_JSON_DEPTH - 1)}  # MAX_JSON_DEPTH levels in all
    triggered = await http.post("/api/v1/tasks/progress/trigger", json={"payload": payload}, headers=bearer(secret))
    run_id = triggered.json()["id"]
    assert (await until_final(run_id)).status is RunStatus.COMPLETED
    retrieved = await http.get(f"/api/v3/runs/{run_id}", headers=bearer(secret))
    assert retrieved.json()["payload"] == payload
    feed = await http.get(f"/realtime/v1/runs/{run_id}", params={"offset": "-1"}, headers=bearer(secret))
    assert orjson.loads(feed.json()[0]["value"]["payload"]) == payload
    async with connect(server.ws_url) as client:
        await client.subscribe_run("s1", run_id, secret)
        assert (await client.expect(of_type("snapshot", "s1")))["runs"][0]["payload"] == payload
        deeper = {"type": "send", "id": "x1", "runId": run_id, "streamId": "s", "data": [payload], "token": secret}
        await client.send(deeper)
        refused = await client.expect(of_type("error", "x1"))
        assert refused["code"] == "invalid_request" and f"deeper than {MAX_JSON_DEPTH} levels" in refused["message"]

    too_deep = await http.post("/api/v1/tasks/progress/trigger", json={"payload": [payload]}, headers=bearer(secret))
    assert too_deep.status_code == 400 and too_deep.json()["code"] == "invalid_request", too_deep.text
