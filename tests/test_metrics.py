"""Observability (docs/observability.md): `/metrics` scraped after real traffic on both backends and parsed
with prometheus_client's parser, the counters moving as the traffic implies; no token or key in the logs
or the metrics; the OpenTelemetry spans of a run in one trace; the log settings."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest
import websockets
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bridge import streams, tasks, tracing
from bridge.cli import main
from bridge.config import Settings
from bridge.errors import BackendUnavailableError
from bridge.logs import UVICORN_LOGGERS, configure_logging
from bridge.models import Run
from bridge.runtime.access import create_public_token
from bridge.server import metrics as metrics_route
from bridge.testing.redis_server import RedisServer
from tests.conftest import SECRET_KEY, RunningServer, serving, suite_settings
from tests.support.helpers import bearer, open_gate, token, unique, until_final, until_run, worker_of

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]
METRICS_WAIT_SECONDS = 10.0


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def key(name: str, **labels: str) -> tuple[str, Labels]:
    return name, tuple(sorted(labels.items()))


async def scrape(http: httpx.AsyncClient, **headers: str) -> Samples:
    response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


async def until_metrics(http: httpx.AsyncClient, expected: dict[tuple[str, Labels], float]) -> Samples:
    """Scrapes until every expected sample has its value. Only the server knows when a gauge or counter
    has moved (after a send completed, a handler returned): this is the one way to wait for it."""
    samples: Samples = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(METRICS_WAIT_SECONDS):
            while True:
                samples = await scrape(http)
                if all(samples.get(k) == v for k, v in expected.items()):
                    return samples
                await asyncio.sleep(0.02)  # pacing between scrapes, not a synchronisation
    differences = {k: (samples.get(k), v) for k, v in expected.items() if samples.get(k) != v}
    raise AssertionError(f"metrics (found, expected) after {METRICS_WAIT_SECONDS:g} s: {differences}")


def transitions(*moves: tuple[str, str]) -> list[tuple[str, Labels]]:
    return [key("bridge_run_transitions_total", **{"from": a, "to": b}) for a, b in moves]


RUN_LIFE = transitions(("none", "QUEUED"), ("QUEUED", "EXECUTING"), ("EXECUTING", "COMPLETED"))


def added(before: Samples, keys: Sequence[tuple[str, Labels]], amount: float) -> dict[tuple[str, Labels], float]:
    return {k: before.get(k, 0.0) + amount for k in keys}


async def test_websocket_traffic_moves_connections_subscriptions_frames_and_streams(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    before = await scrape(http)
    gate, count = unique("gate"), 20
    run = await tasks.trigger("stream-chunks", {"count": count, "gate": gate, "gate_at": 5})
    read = token(f"read:runs:{run.id}")
    received: list[str] = []  # every frame's text, as the client got it

    async def take(connection: Any) -> dict[str, Any]:
        text = await asyncio.wait_for(connection.recv(), 10)
        received.append(text)
        frame: dict[str, Any] = orjson.loads(text)
        return frame

    async with websockets.connect(server.ws_url, ping_interval=None) as connection:
        assert (await take(connection))["type"] == "welcome"
        await connection.send(
            orjson.dumps({"type": "subscribe", "id": "r", "feed": "run", "runId": run.id, "token": read})
        )
        await connection.send(
            orjson.dumps(
                {"type": "subscribe", "id": "s", "feed": "stream", "runId": run.id, "key": "numbers", "token": read}
            )
        )
        chunks = 0
        while chunks < 5:
            chunks += (await take(connection))["type"] == "chunk"
        open_now = await scrape(http)
        assert open_now[key("bridge_connections", protocol="websocket")] == 1
        assert open_now[key("bridge_subscriptions", protocol="websocket", feed="run")] == 1
        assert open_now[key("bridge_subscriptions", protocol="websocket", feed="stream")] == 1
        # Two channels more: the run's, once though the feed and the stream's reader both follow it, and the stream's.
        assert open_now[key("bridge_hub_channels")] == before[key("bridge_hub_channels")] + 2
        assert open_now[key("bridge_worker_slots", state="busy")] == 1
        assert open_now[key("bridge_worker_slots", state="free")] == server.settings.worker_concurrency - 1

        open_gate(gate)
        completed = ended = False
        while not (completed and ended):
            frame = await take(connection)
            ended = ended or frame["type"] == "end"
            completed = completed or (frame["type"] in ("update", "snapshot") and _status(frame) == "COMPLETED")
            chunks += frame["type"] == "chunk"
        assert chunks == count
        await connection.send(orjson.dumps({"type": "unsubscribe", "id": "r"}))
        assert (await take(connection))["type"] == "unsubscribed"
        assert (await scrape(http))[key("bridge_subscriptions", protocol="websocket", feed="stream")] == 0

    sent = sum(len(text.encode()) for text in received)
    await until_metrics(
        http,
        {
            key("bridge_connections", protocol="websocket"): 0,
            key("bridge_subscriptions", protocol="websocket", feed="run"): 0,
            key("bridge_frames_sent_total", protocol="websocket"): len(received),
            key("bridge_sent_bytes_total", protocol="websocket"): sent,
            key("bridge_stream_appended_chunks_total"): count,
            key("bridge_stream_appended_bytes_total"): sum(len(str(number)) for number in range(count)),
            key("bridge_hub_channels"): before[key("bridge_hub_channels")],
            key("bridge_worker_slots", state="busy"): 0,
            **added(before, RUN_LIFE, 1),
        },
    )


def _status(frame: dict[str, Any]) -> str | None:
    runs = frame.get("runs") or [frame.get("run") or {}]
    return runs[-1].get("status")


async def test_sse_long_polls_wait_tokens_and_http_routes_are_counted(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    secret = bearer(SECRET_KEY)
    gate, count = unique("gate"), 10
    response = await http.post(
        "/api/v1/tasks/stream-chunks/trigger",
        json={"payload": {"count": count, "gate": gate, "gate_at": 4}},
        headers=secret,
    )
    run_id = response.json()["id"]
    read = bearer(token(f"read:runs:{run_id}"))
    feed = f"/realtime/v1/runs/{run_id}"
    assert (await http.get("/no/such/route")).status_code == 404

    async with http.stream("GET", f"/realtime/v1/streams/{run_id}/numbers", headers=read) as sse:
        body = b""
        events = sse.aiter_bytes()
        while body.count(b"\n\n") < 4:
            body += await asyncio.wait_for(anext(events), 10)
        first = await http.get(feed, params={"offset": "-1"}, headers=read)
        live = {"offset": "1_0", "handle": first.headers["electric-handle"], "live": "true"}
        poll = asyncio.create_task(http.get(feed, params=live, headers=read))
        held = await until_metrics(http, {key("bridge_connections", protocol="long_poll"): 1})
        assert held[key("bridge_connections", protocol="sse")] == 1
        assert held[key("bridge_subscriptions", protocol="sse", feed="stream")] == 1
        assert held[key("bridge_subscriptions", protocol="electric", feed="run")] == 1
        open_gate(gate)
        async for data in events:  # the response ends once the run finished and every chunk was sent
            body += data
        assert (await poll).status_code == 200
    assert body.count(b"\n\n") == count

    created = await http.post("/api/v1/waitpoints/tokens", json={}, headers=secret)
    assert (await scrape(http))[key("bridge_wait_tokens_waiting")] == 1
    token_id = created.json()["id"]
    await http.post(f"/api/v1/waitpoints/tokens/{token_id}/complete", json={"data": 1}, headers=secret)
    assert (await scrape(http))[key("bridge_wait_tokens_waiting")] == 0

    requests = "bridge_http_requests_total"
    await until_metrics(
        http,
        {
            key("bridge_connections", protocol="long_poll"): 0,
            key("bridge_connections", protocol="sse"): 0,
            key("bridge_frames_sent_total", protocol="sse"): count,
            key("bridge_sent_bytes_total", protocol="sse"): len(body),
            key(requests, route="/api/v1/tasks/{task_id}/trigger", method="POST", status="2xx"): 1,
            key(requests, route="/realtime/v1/runs/{run_id}", method="GET", status="2xx"): 2,
            key(requests, route="/realtime/v1/streams/{run_id}/{key}", method="GET", status="2xx"): 1,
            key(requests, route="/api/v1/waitpoints/tokens/{token_id}/complete", method="POST", status="2xx"): 1,
            key(requests, route="unmatched", method="GET", status="4xx"): 1,
        },
    )


async def test_queue_depth_and_the_metrics_token(backend_settings: Settings) -> None:
    settings = replace(backend_settings, metrics_token="metrics-token-0123456789")
    async with serving(settings, with_worker=False) as server, httpx.AsyncClient(base_url=server.url) as http:
        await server.app_bridge.broker.register_tasks(["echo", "progress"])
        for _ in range(2):
            await tasks.trigger("echo", {})
        refused = await http.get("/metrics", headers=bearer("not-the-metrics-token"))
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        assert (await http.get("/metrics")).status_code == 401
        authorized = {"authorization": "Bearer metrics-token-0123456789"}
        samples = await scrape(http, **authorized)
        assert samples[key("bridge_queue_depth", task="echo")] == 2
        assert samples[key("bridge_queue_depth", task="progress")] == 0
        # OpenMetrics, the format Prometheus asks for first.
        response = await http.get("/metrics", headers={**authorized, "accept": "application/openmetrics-text"})
        assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
        families = {family.name: family for family in openmetrics_families(response.text)}
        assert families["bridge_queue_depth"].samples[0].value == 2


async def test_a_backend_that_does_not_answer_leaves_only_its_gauges_out(
    server: RunningServer, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hangs() -> dict[str, int]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def fails() -> int:
        raise BackendUnavailableError("down")

    monkeypatch.setattr(metrics_route, "BACKEND_READ_SECONDS", 0.2)
    monkeypatch.setattr(server.app_bridge.broker, "queue_depths", hangs)
    samples = await scrape(http)
    assert not any(name == "bridge_queue_depth" for name, _ in samples)
    assert key("bridge_wait_tokens_waiting") not in samples
    assert key("bridge_connections", protocol="websocket") in samples
    monkeypatch.undo()
    monkeypatch.setattr(server.app_bridge.broker, "waiting_waitpoint_count", fails)
    samples = await scrape(http)
    assert key("bridge_queue_depth", task="echo") in samples and key("bridge_wait_tokens_waiting") not in samples


async def test_a_lost_redis_connection_counts_a_reconnect_and_the_resyncs(redis_server: RedisServer) -> None:
    settings = replace(suite_settings(), redis_url=redis_server.url, key_prefix=unique("rbmetrics"))
    async with serving(settings) as server, httpx.AsyncClient(base_url=server.url) as http:
        before = await scrape(http)
        assert before[key("bridge_redis_reconnects_total")] == 0 and before[key("bridge_hub_resyncs_total")] == 0
        # The one listener so far is the worker's, on the cancel channel.
        assert before[key("bridge_hub_channels")] == 1
        redis = Redis.from_url(redis_server.url)
        try:
            assert await redis.client_kill_filter(_type="pubsub") >= 1  # the pub/sub connection drops
        finally:
            await redis.aclose()
        await until_metrics(http, {key("bridge_redis_reconnects_total"): 1, key("bridge_hub_resyncs_total"): 1})


# logs


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """What the CLI's logging setup writes at debug, in JSON; the process's logging is put back after."""
    loggers = [logging.getLogger(name) for name in ("", "bridge", *UVICORN_LOGGERS)]
    saved = [(lg.level, list(lg.handlers), lg.propagate, list(lg.filters)) for lg in loggers]
    stream = io.StringIO()
    configure_logging("debug", "json", stream, access_log=True)
    try:
        yield stream
    finally:
        for logger, (level, handlers, propagate, filters) in zip(loggers, saved, strict=True):
            logger.setLevel(level)
            logger.propagate, logger.filters = propagate, filters
            if logger.name != "root":  # the root keeps what pytest gives it for the next phase
                logger.handlers = handlers
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "stream", None) is stream]:
            root.removeHandler(handler)


async def test_no_token_or_key_reaches_the_logs_or_the_metrics(
    backend_settings: Settings, captured_logs: io.StringIO
) -> None:
    metrics_token = "metrics-token-" + unique("m")
    settings = replace(backend_settings, metrics_token=metrics_token)
    # As the CLI runs uvicorn: its loggers (access log included) go through the handler set up above.
    async with (
        serving(settings, log_config=None, log_level=None) as server,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        secret = bearer(SECRET_KEY)
        triggered = await http.post("/api/v1/tasks/echo/trigger", json={"payload": 1}, headers=secret)
        run_id = triggered.json()["id"]
        await until_final(run_id)  # so a subscription to it gets its snapshot and no update after
        trigger_token = create_public_token(SECRET_KEY, ["trigger:tasks:echo"], one_time=True)
        by_token = await http.post("/api/v1/tasks/echo/trigger", json={"payload": 2}, headers=bearer(trigger_token))
        assert by_token.status_code == 200
        read = token(f"read:runs:{run_id}")
        assert (await http.get(f"/api/v3/runs/{run_id}", headers=bearer(read))).status_code == 200
        forged = create_public_token("another-key-of-someone-else-0123", [f"read:runs:{run_id}"])
        assert (await http.get(f"/api/v3/runs/{run_id}", headers=bearer(forged))).status_code == 401
        async with websockets.connect(server.ws_url, ping_interval=None) as connection:
            await connection.recv()
            subscribe = {"type": "subscribe", "id": "r", "feed": "run", "runId": run_id, "token": read}
            await connection.send(orjson.dumps(subscribe))
            await connection.send(orjson.dumps({**subscribe, "id": "forged", "token": forged}))
            assert {orjson.loads(await connection.recv())["type"] for _ in range(2)} == {"snapshot", "error"}
        created = (await http.post("/api/v1/waitpoints/tokens", json={}, headers=secret)).json()
        signature = created["url"].rsplit("/", 1)[1]
        assert (await http.post(created["url"].removeprefix(server.url), json={"ok": True})).status_code == 200
        scraped = (await http.get("/metrics", headers=bearer(metrics_token))).text

    lines = captured_logs.getvalue().splitlines()
    entries = [orjson.loads(line) for line in lines]  # every line one JSON object
    assert all({"ts", "level", "logger", "message"} <= entry.keys() for entry in entries)
    access = [entry["message"] for entry in entries if entry["logger"] == "uvicorn.access"]
    assert any(f"/api/v3/runs/{run_id}" in message for message in access), access
    assert any("/callback/<redacted>" in message for message in access), access
    for secret_text in (SECRET_KEY, trigger_token, read, forged, metrics_token, signature):
        assert secret_text not in captured_logs.getvalue()
        assert secret_text not in scraped


async def test_the_access_log_is_off_unless_asked_for(
    backend_settings: Settings, captured_logs: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: dict[bool, list[str]] = {}
    for wanted in (False, True):
        captured_logs.seek(0)
        captured_logs.truncate()
        monkeypatch.setenv("BRIDGE_ACCESS_LOG", "1" if wanted else "")
        configure_logging("info", "json", captured_logs)  # the environment decides, as for the CLI
        async with (
            serving(backend_settings, log_config=None, log_level=None) as server,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            assert (await http.get("/healthz")).status_code == 200
            async with websockets.connect(server.ws_url, ping_interval=None) as connection:
                await connection.recv()
        logged[wanted] = [orjson.loads(line)["message"] for line in captured_logs.getvalue().splitlines()]
    for wanted, messages in logged.items():
        assert any("Application startup complete" in m for m in messages), messages  # uvicorn's other lines stay
        assert any("GET /healthz" in m for m in messages) is wanted, messages
        assert any('"WebSocket /ws" [accepted]' in m for m in messages) is wanted, messages


async def test_bad_log_settings_stop_the_cli_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_LOG_FORMAT", "xml")
    with pytest.raises(SystemExit) as stopped:
        main(["worker", "--tasks", "tests/support/tasks.py"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "realtime-bridge worker: error: BRIDGE_LOG_FORMAT / --log-format is one of text, json, not 'xml'\n"
    )


# tracing


class _Switch(Sampler):
    """Samples only while a test records spans: the tracer provider, once set, stays for the whole process."""

    on = False

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, kind: Any = None, attributes: Any = None, *args: Any
    ) -> SamplingResult:
        # The result's attributes become the span's: they are passed through.
        return SamplingResult(Decision.RECORD_AND_SAMPLE if self.on else Decision.DROP, attributes)

    def get_description(self) -> str:
        return "on while a test records spans"


_SWITCH = _Switch()
_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider(sampler=_SWITCH)
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _SWITCH.on = True
    try:
        yield _EXPORTER
    finally:
        _SWITCH.on = False
        _EXPORTER.clear()


async def test_a_runs_spans_are_in_the_trace_of_its_trigger(
    spans: InMemorySpanExporter,  # first: the provider is set before the server's bridge starts, as an app does
    server: RunningServer,
) -> None:
    with trace.get_tracer("tests").start_as_current_span("caller") as caller:
        run = await tasks.trigger("write-then-await-stop", {"count": 5})
    await until_run(run.id, lambda state: state.metadata.get("written") == 5)
    await streams.input("stop").send(run.id, "stop")
    await until_final(run.id)
    await worker_of(server).released(run.id)  # its execution's span has ended

    by_name: dict[str, list[Any]] = {}
    for span in spans.get_finished_spans():
        by_name.setdefault(span.name, []).append(span)
    [trigger_span], [run_span], [send_span] = (
        by_name["bridge.trigger"],
        by_name["bridge.run"],
        by_name["bridge.input.send"],
    )
    appends = by_name["bridge.stream.append"]
    trace_id = caller.get_span_context().trace_id
    assert {span.context.trace_id for spans_ in by_name.values() for span in spans_} == {trace_id}
    assert trigger_span.parent.span_id == caller.get_span_context().span_id
    # Carried in the run record, so any worker's execution is a child of the trigger.
    stored = await server.app_bridge.broker.get_run(run.id)
    assert stored is not None and stored.trace_context is not None
    assert stored.trace_context.startswith(f"00-{trace_id:032x}-{trigger_span.context.span_id:016x}-")
    assert run_span.parent.span_id == trigger_span.context.span_id
    assert run_span.attributes["bridge.run_id"] == run.id
    assert all(span.parent.span_id == run_span.context.span_id for span in appends)
    assert sum(span.attributes["bridge.chunks"] for span in appends) == 5
    assert send_span.parent.span_id == trigger_span.context.span_id
    assert send_span.start_time <= send_span.end_time


def test_without_opentelemetry_tracing_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # imports of it fail, as when it is not installed
    spec = importlib.util.spec_from_file_location("tracing_without_opentelemetry", tracing.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with module.span("bridge.trigger", {"bridge.task": "echo"}):
        assert module.current_traceparent() is None


def test_a_run_record_stays_readable_across_versions() -> None:
    """A run without a trace context is stored without the field, as before it existed; a field a newer
    process stored is ignored, so processes of two versions share one Redis during a rolling deploy."""
    untraced = Run(id="run_1", task_identifier="echo")
    assert "trace_context" not in orjson.loads(untraced.to_storage())
    newer = {**orjson.loads(untraced.to_storage()), "a_field_of_a_later_version": 1}
    assert Run.from_storage(orjson.dumps(newer)) == untraced
    traced = replace(untraced, trace_context="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert Run.from_storage(traced.to_storage()) == traced
