"""Property-based fuzzing (hypothesis) of a real server: the settings profiles, the server's known ids and
tokens, hostile JSON values, and the checks every example ends with.

Strategies are built before any server exists, so they draw `Known` placeholders (a run that exists, a
token with some scope, a forged token...) that `World.resolve` replaces with the values of the server under
test. A falsifying example stays readable (`Known.READ_LIVE_RUN`, not a JWT) and can be pinned with
`@example`. A value that must reach the server as exact JSON text (a number past 64 bits, 300 nested
arrays) is a `RawJson`, spliced in by `encode_json`.

The hypothesis profiles (`ci`, `campaign`) are registered in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import orjson
from hypothesis import strategies as st

from bridge import streams, tasks, wait
from bridge.models import MAX_JSON_DEPTH
from bridge.runtime.access import AUDIENCE, ISSUER, create_public_token
from bridge.runtime.output_streams import MAX_STREAM_INDEX
from tests.conftest import RunningServer
from tests.support.helpers import bearer, open_gate, token, unique, until_final

STREAM_KEY = "numbers"  # the key both known runs write their chunks to
FINISHED_RUN_CHUNKS = 3
LIVE_RUN_CHUNKS = 2  # written before the live run waits at its gate, until the test ends
SETTLE_SECONDS = 10.0  # what the server has to finish an example's requests and connections in


class Known(enum.Enum):
    """Something the server under test knows (or a forgery of it), resolved by `World.resolve`."""

    FINISHED_RUN = "a completed run with 3 chunks on its stream"
    LIVE_RUN = "an executing run with 2 chunks on its stream, waiting at a gate"
    UNKNOWN_RUN = "a well-formed run id that does not exist"
    SPARE_RUN = "an executing run waiting at the gate, for cancelling"
    DEEP_RUN = "a completed run whose payload nests as deep as a stored value may"
    BATCH = "a batch with one run"
    OPEN_BATCH = "a batch announced with 20 runs, for adding items"
    WAIT_TOKEN = "a waiting wait token"
    CALLBACK_SIGNATURE = "the signature in the wait token's callback URL"
    TAG = "the tag of the finished run"
    FEED_HANDLE = "the handle of a feed session on the live run, at offset 1_0"
    # tokens
    SECRET_KEY = "the secret key"
    READ_FINISHED_RUN = "read:runs:<finished run>"
    READ_LIVE_RUN = "read:runs:<live run>"
    READ_UNKNOWN_RUN = "read:runs:<a run that does not exist>: mis-scoped"
    WRITE_LIVE_INPUTS = "write:inputStreams:<live run>"
    WRITE_FINISHED_INPUTS = "write:inputStreams:<finished run>"
    WRITE_WAIT_TOKEN = "write:waitpoints:<wait token>"
    READ_BATCH = "read:batch:<batch>"
    READ_TAG = "read:tags:<tag>"
    READ_ALL_RUNS = "read:runs"
    ADMIN = "admin"
    TRIGGER_ECHO_ONCE = "trigger:tasks:echo, one-time"
    EXPIRED = "read:runs, expired"
    WRONG_KEY = "admin, signed with another key"
    UNSIGNED = "admin, alg none"
    TAMPERED = "read:runs:<live run>'s signature on admin claims"
    NOT_PUBLIC = "admin without pub: true"
    SCOPES_NOT_A_LIST = 'scopes: "admin"'
    TRUNCATED = "a valid token cut short"


TOKEN_REFS = tuple(Known)[list(Known).index(Known.SECRET_KEY) :]  # the tokens close the enum, forged ones last
FORGED_TOKENS = TOKEN_REFS[TOKEN_REFS.index(Known.EXPIRED) :]


def stored_chunks(run: Any, key: Any) -> int | None:
    """How many chunks a known run has on its stream `key` for good (it has completed); None for other runs."""
    if run is Known.DEEP_RUN:
        return 0
    if run is Known.FINISHED_RUN:
        return FINISHED_RUN_CHUNKS if key == STREAM_KEY else 0
    return None


@dataclass(frozen=True)
class RawJson:
    """JSON text sent as it is: what Python values cannot say (huge numbers, deep nesting, lone surrogates)."""

    text: str


@dataclass(frozen=True)
class World:
    values: dict[Known, str]
    gate: str

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text("World(...)")  # hypothesis prints it with every failing example: not its dozen tokens

    @property
    def finished_run(self) -> str:
        return self.values[Known.FINISHED_RUN]

    @property
    def live_run(self) -> str:
        return self.values[Known.LIVE_RUN]

    def resolve(self, value: Any) -> Any:
        """`value` with every `Known` inside it replaced by this server's value."""
        if isinstance(value, Known):
            return self.values[value]
        if isinstance(value, dict):
            return {self.resolve(k): self.resolve(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.resolve(item) for item in value]
        return value


def _forged(
    claims: dict[str, Any], key: str | None = "another secret key of 32+ bytes, not ours", algorithm: str = "HS256"
) -> str:
    return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "bridge", **claims}, key, algorithm=algorithm)


async def make_world(server: RunningServer) -> World:
    """Creates what the strategies refer to, on `server` (whose bridge the SDK talks to)."""
    secret = server.settings.secret_key
    tag = unique("fuzz")
    finished = await tasks.trigger("stream-numbers", {"count": FINISHED_RUN_CHUNKS}, tags=[tag])
    gate = unique("gate")
    live = await tasks.trigger(
        "stream-chunks", {"count": LIVE_RUN_CHUNKS + 1, "key": STREAM_KEY, "gate": gate, "gate_at": LIVE_RUN_CHUNKS}
    )
    spare = await tasks.trigger("wait-for-gate", {"gate": gate})
    deep = await tasks.trigger("progress", {"steps": 1, "deep": nested_value(MAX_JSON_DEPTH - 1)})
    batch = await tasks.batch_trigger("echo", [{"payload": 1}])
    wait_token = await wait.create_token(timeout="1h")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        feed = await http.get(f"/realtime/v1/runs/{live.id}", params={"offset": "-1"}, headers=bearer(secret))
        feed.raise_for_status()
    await until_final(finished.id)
    await until_final(deep.id)
    async with asyncio.timeout(30):  # the live run has stored its chunks before the gate
        seen = 0
        async for _ in streams.read(live.id, STREAM_KEY):
            seen += 1
            if seen == LIVE_RUN_CHUNKS:
                break
    valid = token("read:runs:" + live.id)
    header, _, signature = valid.split(".")
    admin_claims = _forged({"pub": True, "scopes": ["admin"], "exp": 2**40}).split(".")[1]
    values = {
        Known.FINISHED_RUN: finished.id,
        Known.LIVE_RUN: live.id,
        Known.UNKNOWN_RUN: "run_" + "0" * 24,
        Known.SPARE_RUN: spare.id,
        Known.DEEP_RUN: deep.id,
        Known.BATCH: batch.batch_id,
        Known.OPEN_BATCH: await server.app_bridge.batches.create(20),
        Known.WAIT_TOKEN: wait_token.id,
        Known.CALLBACK_SIGNATURE: wait_token.url.rsplit("/", 1)[1],
        Known.TAG: tag,
        Known.FEED_HANDLE: feed.headers["electric-handle"],
        Known.SECRET_KEY: secret,
        Known.READ_FINISHED_RUN: token("read:runs:" + finished.id),
        Known.READ_LIVE_RUN: valid,
        Known.READ_UNKNOWN_RUN: token("read:runs:run_" + "0" * 24),
        Known.WRITE_LIVE_INPUTS: token("write:inputStreams:" + live.id),
        Known.WRITE_FINISHED_INPUTS: token("write:inputStreams:" + finished.id),
        Known.WRITE_WAIT_TOKEN: wait_token.public_access_token,
        Known.READ_BATCH: token("read:batch:" + batch.batch_id),
        Known.READ_TAG: token("read:tags:" + tag),
        Known.READ_ALL_RUNS: token("read:runs"),
        Known.ADMIN: token("admin"),
        Known.TRIGGER_ECHO_ONCE: create_public_token(secret, ["trigger:tasks:echo"], "1h", one_time=True),
        Known.EXPIRED: token("read:runs", expires=datetime(2001, 1, 1, tzinfo=UTC)),
        Known.WRONG_KEY: _forged({"pub": True, "scopes": ["admin"], "exp": 2**40}),
        Known.UNSIGNED: _forged({"pub": True, "scopes": ["admin"], "exp": 2**40}, key=None, algorithm="none"),
        Known.TAMPERED: f"{header}.{admin_claims}.{signature}",
        Known.NOT_PUBLIC: _forged({"scopes": ["admin"], "exp": 2**40}, key=secret),
        Known.SCOPES_NOT_A_LIST: _forged({"pub": True, "scopes": "admin", "exp": 2**40}, key=secret),
        Known.TRUNCATED: valid[: len(valid) // 2],
    }
    return World(values, gate)


@contextlib.asynccontextmanager
async def fuzzed_world(server: RunningServer) -> AsyncIterator[World]:
    world = await make_world(server)
    try:
        yield world
    finally:
        open_gate(world.gate)  # the live run may finish: its worker slot is free for the next test


# JSON encoding


def encode_json(value: Any) -> str:
    """`value` as JSON text, with `RawJson` spliced in as it is."""
    if isinstance(value, RawJson):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{orjson.dumps(k).decode()}:{encode_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(encode_json(item) for item in value) + "]"
    return orjson.dumps(value).decode()


# strategies

BOUNDARY_INTS = (
    0,
    1,
    -1,
    2,
    3,
    MAX_STREAM_INDEX - 1,
    MAX_STREAM_INDEX,
    MAX_STREAM_INDEX + 1,
    2**63 - 1,
    2**64 - 1,
    -(2**63),
)
RAW_NUMBERS = tuple(
    RawJson(text) for text in ("1" + "0" * 400, "1e400", "-1e400", "18446744073709551616", "1e-400", "-0", "1E2", "1.0")
)
BOUNDARY_LENGTHS = (63, 64, 65, 127, 128, 129, 2047, 2048, 2049, 16_384, 16_385)


def nested(depth: int) -> RawJson:
    return RawJson("[" * depth + "]" * depth)


def nested_value(depth: int) -> list[Any]:
    """Lists `depth` levels deep."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# Nesting around the bound on stored values, around what orjson encodes (254 levels) and decodes (1,024).
DEPTHS = (MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 250, 252, 253, 254, 255, 1023, 1024, 1025)
DEEP = st.one_of(st.sampled_from(DEPTHS), st.integers(1, 1100)).map(nested)

texts = st.text(st.characters(codec="utf-8"), max_size=40)  # any code point but surrogates: NUL, RTL, emoji
boundary_strings = st.sampled_from(BOUNDARY_LENGTHS).map(lambda n: "a" * n)
integers = st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(-(2**63), 2**64 - 1))
scalars = st.one_of(st.none(), st.booleans(), integers, st.floats(), texts, st.sampled_from(RAW_NUMBERS))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=10,
)
hostile = st.one_of(json_values, boundary_strings, DEEP, st.sampled_from(Known))


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any] = hostile) -> st.SearchStrategy[Any]:
    """`good` nine times in ten, else `bad`: frames and requests reach past their first check often."""
    return st.integers(0, 9).flatmap(lambda roll: bad if roll == 0 else good)


def either(good: list[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    """A field's valid values nine times in ten, else its invalid ones (around its documented bounds)."""
    return mostly(st.sampled_from(good), st.sampled_from(bad))


# Often the secret key (it may do anything), so requests also get past authorization to what follows.
tokens = mostly(
    st.one_of(st.just(Known.SECRET_KEY), st.sampled_from(TOKEN_REFS[: -len(FORGED_TOKENS)])),
    st.sampled_from(FORGED_TOKENS),
)


# Who may do what with the known things (docs/protocol.md, docs/official-protocol.md): a success with any
# other token (or none) is a leak.
READ_ANY = frozenset({Known.SECRET_KEY, Known.ADMIN, Known.READ_ALL_RUNS})
WRITE_ANY = frozenset({Known.SECRET_KEY, Known.ADMIN})
READ_RUN = {
    Known.FINISHED_RUN: READ_ANY | {Known.READ_FINISHED_RUN, Known.READ_TAG},
    Known.LIVE_RUN: READ_ANY | {Known.READ_LIVE_RUN},
    Known.SPARE_RUN: READ_ANY,
    Known.DEEP_RUN: READ_ANY,
}
WRITE_INPUTS = {
    Known.LIVE_RUN: WRITE_ANY | {Known.WRITE_LIVE_INPUTS},
    Known.FINISHED_RUN: WRITE_ANY | {Known.WRITE_FINISHED_INPUTS},
    Known.SPARE_RUN: WRITE_ANY,
}
COMPLETE_TOKEN = WRITE_ANY | {Known.WRITE_WAIT_TOKEN}


def rights(table: dict[Known, frozenset[Known]], target: Any) -> frozenset[Known]:
    """The tokens `table` lists for `target`; none for a target that is not a known one (a hostile id, a list)."""
    return table.get(target, frozenset()) if isinstance(target, Known) else frozenset()


def may_read_tags(tags: Any) -> frozenset[Known]:
    return READ_ANY | ({Known.READ_TAG} if isinstance(tags, list) and Known.TAG in tags else set())


def may_read_batch(batch: Any) -> frozenset[Known]:
    return READ_ANY | ({Known.READ_BATCH} if batch is Known.BATCH else set())


# the checks every example ends with


class LogRecords(logging.Handler):
    """Every record at WARNING or above from the bridge, and every error anywhere (uvicorn's "Exception in
    ASGI application" included: uvicorn's loggers do not propagate to the root logger)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.name.startswith("bridge"):
            self.records.append(record)

    def take(self) -> list[str]:
        taken = [f"{r.name}: {r.getMessage()}" + (f"\n{r.exc_text or ''}" if r.exc_info else "") for r in self.records]
        self.records.clear()
        return taken


@contextlib.contextmanager
def captured_logs() -> Iterator[LogRecords]:
    handler = LogRecords()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


async def settled(server: RunningServer) -> None:
    """Asserts every request and connection the server is serving ends within SETTLE_SECONDS (the client
    has left or read its answer): none keeps running, or leaks, after its client."""
    in_flight = set(server.uvicorn.server_state.tasks)
    if in_flight:
        _, pending = await asyncio.wait(in_flight, timeout=SETTLE_SECONDS)
        assert not pending, f"{len(pending)} request(s) or connection(s) still served {SETTLE_SECONDS:g} s later"
