"""The Broker contract on both backends, then what only Redis can do: survive a restart or an outage.

Absence of a notification is checked without sleeping: a marker is published after the change
that must not be seen, and the next message must be the marker (one connection delivers in order).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bridge.backends import create_broker
from bridge.backends.base import Broker, Delivery, Gate, QueueSpec, StreamPage
from bridge.backends.channels import (
    CANCEL_CHANNEL,
    batch_channel,
    decode_chunks_message,
    run_channel,
    stream_channel,
    tag_channel,
)
from bridge.backends.memory import MemoryBroker
from bridge.backends.redis import RedisBroker
from bridge.backends.redis import pubsub as redis_backend
from bridge.backends.redis.cluster import CLUSTER_SCHEME
from bridge.config import Settings
from bridge.errors import BackendUnavailableError, NotFoundError, RunFinishedError, StreamFailedError, StreamOrderError
from bridge.metrics import Metrics
from bridge.models import Run, RunStatus, new_id, now_ms
from bridge.runtime.output_streams import StreamWriter
from bridge.testing.redis_server import RedisServer
from tests.conftest import SECRET_KEY, start_server, stop_server
from tests.support.redis_cluster import cluster_client

pytestmark = pytest.mark.cluster
RawRedis = Redis | RedisCluster | None

EVENT_TIMEOUT = 10.0  # for anything awaited: generous, only reached when the test fails
_own_prefixes = itertools.count()


class Recorder:
    """A broker's listener whose messages and resyncs can be awaited."""

    def __init__(self, broker: Broker) -> None:
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.resynced = asyncio.Event()
        broker.set_listener(lambda channel, data: self.messages.put_nowait((channel, data)), self.resynced.set)

    async def next(self) -> tuple[str, bytes]:
        return await asyncio.wait_for(self.messages.get(), EVENT_TIMEOUT)

    async def next_run(self) -> tuple[str, Run]:
        channel, data = await self.next()
        return channel, Run.from_storage(data)


def make_run(
    *, tags: Iterable[str] = (), batch_id: str | None = None, created_at: int | None = None, run_id: str | None = None
) -> Run:
    run = Run(id=run_id or new_id("run_"), task_identifier="contract", payload={"n": 1}, tags=list(tags))
    run.batch_id = batch_id
    if created_at is not None:
        run.created_at = run.updated_at = created_at
    return run


def changed(run: Run, **fields: object) -> Run:
    """The next stored state of `run`."""
    return replace(run, version=run.version + 1, **fields)  # type: ignore[arg-type]


async def started(settings: Settings) -> Broker:
    broker = create_broker(settings)
    await broker.start()
    return broker


@pytest.fixture
async def broker(backend_settings: Settings) -> AsyncIterator[Broker]:
    broker = await started(backend_settings)
    try:
        yield broker
    finally:
        await broker.stop()


@pytest.fixture
async def raw_redis(backend_settings: Settings) -> AsyncIterator[RawRedis]:
    """A plain client on the test's Redis (None on the memory backend), to look at keys directly."""
    if not backend_settings.redis_url:
        yield None
        return
    url = backend_settings.redis_url
    client = cluster_client(url) if url.startswith(CLUSTER_SCHEME) else Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


def own_settings(redis_server: RedisServer, **fields: object) -> Settings:
    settings = Settings(secret_key=SECRET_KEY, redis_url=redis_server.url, key_prefix=f"rbown{next(_own_prefixes)}")
    return replace(settings, **fields)  # type: ignore[arg-type]


# runs
async def test_insert_get_and_compare_and_set(broker: Broker) -> None:
    run = make_run(tags=["cas"])
    stored, created = await broker.insert_run(run, None, 60)
    assert created and stored.id == run.id
    assert await broker.get_run(run.id) == run
    assert await broker.get_run("run_missing") is None

    executing = changed(run, status=RunStatus.EXECUTING)
    assert await broker.replace_run(executing, expected_version=1)
    assert await broker.get_run(run.id) == executing

    stale = changed(run, status=RunStatus.CANCELED)  # also built on version 1: a concurrent writer lost
    assert not await broker.replace_run(stale, expected_version=1)
    assert not await broker.replace_run(changed(executing), expected_version=7)
    assert not await broker.replace_run(changed(make_run()), expected_version=1)  # never inserted
    current = await broker.get_run(run.id)
    assert current is not None and current.version == 2 and current.status is RunStatus.EXECUTING


async def test_idempotency_scope_returns_the_first_run(broker: Broker) -> None:
    first = make_run()
    assert (await broker.insert_run(first, "contract:key-1", 60)) == (first, True)

    second = make_run()
    existing, created = await broker.insert_run(second, "contract:key-1", 60)
    assert not created and existing == first
    assert await broker.get_run(second.id) is None  # the duplicate was not stored

    third = make_run()
    assert (await broker.insert_run(third, "contract:key-2", 60)) == (third, True)


async def test_tag_index_has_all_tags_since_and_limit_newest_first(broker: Broker) -> None:
    base = now_ms() - 60_000
    a = make_run(tags=["tx", "ty"], created_at=base + 1)
    b = make_run(tags=["tx"], created_at=base + 2)
    c = make_run(tags=["tx", "ty", "tz"], created_at=base + 3)
    d = make_run(tags=["ty"], created_at=base + 4)
    for run in (a, b, c, d):
        await broker.insert_run(run, None, 60)

    async def ids(tags: list[str], since: int = 0, limit: int = 100) -> list[str]:
        return [run.id for run in await broker.runs_with_tags(tags, since, limit)]

    assert await ids(["tx"]) == [c.id, b.id, a.id]
    assert await ids(["tx", "ty"]) == [c.id, a.id]
    assert await ids(["ty", "tx"]) == [c.id, a.id]
    assert await ids(["tx", "ty", "tz"]) == [c.id]
    assert await ids(["tx", "ty"], since=base + 2) == [c.id]
    assert await ids(["ty"], since=base + 3) == [d.id, c.id]
    assert await ids(["tx"], limit=2) == [c.id, b.id]
    assert await ids(["tx", "missing"]) == []
    assert await ids([]) == []

    updated = changed(a, status=RunStatus.EXECUTING)  # a change keeps the run indexed, in its new state
    assert await broker.replace_run(updated, 1)
    assert await broker.runs_with_tags(["tx", "ty"], 0, 100) == [c, updated]


async def test_batch_index_keeps_insertion_order(broker: Broker) -> None:
    batch = [make_run(batch_id="batch_one") for _ in range(3)]
    other = make_run(batch_id="batch_two")
    for run in [*batch, other]:
        await broker.insert_run(run, None, 60)
    assert await broker.runs_in_batch("batch_one") == batch
    assert await broker.runs_in_batch("batch_two") == [other]
    assert await broker.runs_in_batch("batch_none") == []


# change notification
async def test_changes_are_published_on_run_tag_and_batch_channels_only_after_listen(broker: Broker) -> None:
    recorder = Recorder(broker)
    run = make_run(tags=["notify"], batch_id="batch_notify")
    await broker.insert_run(run, None, 60)  # nobody listens yet: must never be delivered

    channels = [run_channel(run.id), tag_channel("notify"), batch_channel("batch_notify")]
    await broker.listen(channels)
    assert await broker.replace_run(changed(run, status=RunStatus.EXECUTING), 1)
    received = [await recorder.next_run() for _ in channels]
    assert sorted(channel for channel, _ in received) == sorted(channels)  # without the key prefix
    assert all(r.version == 2 and r.status is RunStatus.EXECUTING for _, r in received)

    fresh = make_run(tags=["notify"], batch_id="batch_notify")  # a new run reaches the tag and batch feeds
    await broker.insert_run(fresh, None, 60)
    received = [await recorder.next_run() for _ in range(2)]
    assert sorted(channel for channel, _ in received) == sorted(channels[1:])
    assert {r.id for _, r in received} == {fresh.id}
    assert recorder.messages.empty()


async def test_unlisten_stops_notifications(broker: Broker) -> None:
    recorder = Recorder(broker)
    quiet, marker = make_run(), make_run()
    await broker.insert_run(quiet, None, 60)
    await broker.insert_run(marker, None, 60)
    await broker.listen([run_channel(quiet.id), run_channel(marker.id)])
    await broker.listen([run_channel(quiet.id)])  # listened twice: one unlisten keeps it

    await broker.unlisten([run_channel(quiet.id)])
    quiet_v2 = changed(quiet)
    assert await broker.replace_run(quiet_v2, 1)
    assert (await recorder.next_run())[1].id == quiet.id

    await broker.unlisten([run_channel(quiet.id)])
    assert await broker.replace_run(changed(quiet_v2), 2)
    assert await broker.replace_run(changed(marker), 1)
    assert (await recorder.next_run())[1].id == marker.id  # the change of `quiet` never came


async def test_publish_reaches_listeners(broker: Broker) -> None:
    recorder = Recorder(broker)
    await broker.listen([CANCEL_CHANNEL])
    await broker.publish(CANCEL_CHANNEL, b"run_cancelled")
    assert await recorder.next() == (CANCEL_CHANNEL, b"run_cancelled")


# task queue
# input streams
async def test_an_input_idempotency_key_stores_once_per_run_and_stream(broker: Broker) -> None:
    run, other = make_run(), make_run()
    for each in (run, other):
        await broker.insert_run(each, None, 60)
    recorder = Recorder(broker)
    channel = stream_channel(run.id, "$in:a")
    await broker.listen([channel])
    assert await broker.append_input(run.id, "$in:a", b"1", "k") == 0
    message = await recorder.next()
    assert message[0] == channel and decode_chunks_message(message[1])[::2] == (0, [b"1"])
    assert await broker.append_input(run.id, "$in:a", b"2", "k") == 0  # stored and published nothing
    await broker.publish(channel, b"marker")
    assert await recorder.next() == (channel, b"marker")
    assert await broker.append_input(run.id, "$in:a", b"3", "k2") == 1
    assert await broker.append_input(run.id, "$in:a", b"4") == 2
    assert await broker.append_input(run.id, "$in:b", b"5", "k") == 0  # per stream
    assert await broker.append_input(other.id, "$in:a", b"6", "k") == 0  # per run
    assert (await broker.read_chunks(run.id, "$in:a", 0, 10, 1000)).chunks == [b"1", b"3", b"4"]
    assert (await broker.read_chunks(other.id, "$in:a", 0, 10, 1000)).chunks == [b"6"]

    assert await broker.replace_run(changed(run, status=RunStatus.COMPLETED), 1)
    assert await broker.append_input(run.id, "$in:a", b"2", "k") == 0  # accepted before it finished
    with pytest.raises(RunFinishedError):
        await broker.append_input(run.id, "$in:a", b"7", "k3")
    with pytest.raises(NotFoundError):
        await broker.append_input("run_missing", "$in:a", b"8", "k")
    assert await broker.stream_length(run.id, "$in:a") == 3


async def test_claim_ack_and_claim_timeout(broker: Broker) -> None:
    await broker.enqueue("queue-a", "run_first")
    delivery = await broker.claim("worker_1", ["queue-a"], 5)
    assert delivery is not None and delivery.run_id == "run_first"
    await broker.ack(delivery)

    began = time.monotonic()
    assert await broker.claim("worker_1", ["queue-a"], 0.3) is None  # handed out once, then acknowledged
    assert time.monotonic() - began >= 0.25
    assert await broker.claim("worker_2", ["queue-a"], 0.1) is None


async def test_each_run_is_handed_to_one_worker(broker: Broker) -> None:
    runs = {f"run_{task}_{i}" for task in ("qa", "qb") for i in range(3)}
    for run_id in sorted(runs):
        await broker.enqueue(run_id.split("_")[1], run_id)
    claimed: list[Delivery] = []
    for worker in itertools.islice(itertools.cycle(["worker_1", "worker_2"]), len(runs)):
        delivery = await broker.claim(worker, ["qa", "qb"], 5)
        assert delivery is not None
        claimed.append(delivery)
    assert sorted(d.run_id for d in claimed) == sorted(runs)
    assert await broker.claim("worker_1", ["qa", "qb"], 0.1) is None
    assert await broker.claim("worker_2", ["qa", "qb"], 0.1) is None
    for delivery in claimed:
        await broker.ack(delivery)


async def test_a_gate_admits_up_to_its_limit_and_each_release_admits_the_next_once(broker: Broker) -> None:
    """docs/queues.md: admission and release are idempotent by run id; the lowest score is admitted first,
    then arrival order; a raised limit admits the waiting runs before a newcomer; an empty gate is gone."""
    gate = Gate("q/gate", "user-1", 2)
    admitted = [await broker.admit(gate, "task-g", run_id, score) for run_id, score in [("run_a", 5), ("run_b", 5)]]
    assert admitted == [True, True]
    assert await broker.admit(gate, "task-g", "run_c", 9) is False
    assert await broker.admit(gate, "task-g", "run_d", 1) is False  # priority: ahead of run_c
    assert await broker.admit(gate, "task-g", "run_e", 9) is False  # same score as run_c: after it
    assert await broker.admit(gate, "task-g", "run_c", 0) is False  # already in line: keeps its place
    assert await broker.gate_state(gate) == (["run_a", "run_b"], ["run_d", "run_c", "run_e"])
    assert await broker.gate_state(Gate("q/gate", "user-2", 2)) == ([], [])  # another key's gate

    assert await broker.release(gate, "task-g", "run_a") == ["run_d"]
    assert await broker.release(gate, "task-g", "run_a") == []  # twice = once
    assert await broker.release(gate, "task-g", "run_e") == []  # out of line, held nothing: frees nothing
    assert await broker.gate_state(gate) == (["run_b", "run_d"], ["run_c"])
    assert await broker.admit(gate, "task-g", "run_d", 1) is True  # holding a slot: queued again (a resume)
    assert await broker.admit(Gate("q/gate", "user-1", 4), "task-g", "run_f", 99) is True  # a raised limit
    assert await broker.gate_state(gate) == (["run_b", "run_c", "run_d", "run_f"], [])  # run_c went first

    queued = []
    for _ in range(6):  # run_a, run_b, run_d twice, then run_c, run_f
        delivery = await broker.claim("worker_g", ["task-g"], 5)
        assert delivery is not None
        queued.append(delivery.run_id)
        await broker.ack(delivery)
    assert queued == ["run_a", "run_b", "run_d", "run_d", "run_c", "run_f"]
    for run_id in ("run_b", "run_c", "run_d", "run_f"):
        await broker.release(gate, "task-g", run_id)
    assert await broker.gate_state(gate) == ([], [])


async def test_crowded_gates_are_the_gates_with_waiting_runs_each_call_going_on_from_the_last(
    broker: Broker,
) -> None:
    """What the sweep of lost slots reads (docs/queues.md): a gate with runs waiting, with its holders and
    stored limit; one without (free slots, or emptied) is not listed."""
    full, other, free = Gate("q/crowd", None, 1), Gate("q/crowd", "k|2", 1), Gate("q/free", None, 5)
    for number, gate in enumerate((full, other)):
        assert await broker.admit(gate, "task-c", f"run_{number}_holds", 0) is True
        assert await broker.admit(gate, "task-c", f"run_{number}_waits", 0) is False
    assert await broker.admit(free, "task-c", "run_free", 0) is True
    everything = sorted(await broker.crowded_gates(10), key=lambda listed: str(listed[0].key))
    assert everything == [(full, ["run_0_holds"]), (other, ["run_1_holds"])]
    seen = {gate for _ in range(2) for gate, _ in await broker.crowded_gates(1)}
    assert seen == {full, other}  # the second call went on (Redis's SSCAN may also give both at once)
    await broker.release(full, "task-c", "run_0_holds")  # its waiting run takes the slot: nothing waits
    assert [gate for gate, _ in await broker.crowded_gates(10)] == [other]


async def test_tasks_declare_queues_that_triggers_of_other_tasks_name(broker: Broker) -> None:
    await broker.set_task_queues({"task-x": QueueSpec("shared", 3), "task-y": None})
    assert await broker.declared_queue("task-x", None) == QueueSpec("shared", 3)
    assert await broker.declared_queue("task-z", "shared") == QueueSpec("shared", 3)
    assert await broker.declared_queue("task-y", None) == QueueSpec("task/task-y", None)
    assert await broker.declared_queue("task-y", "nobody-declared") == QueueSpec("nobody-declared", None)
    await broker.set_task_queues({"task-x": None})  # the task no longer declares one
    assert await broker.declared_queue("task-x", None) == QueueSpec("task/task-x", None)


async def test_a_claim_waits_for_the_next_enqueue(broker: Broker) -> None:
    waiting = asyncio.create_task(broker.claim("worker_1", ["queue-late"], EVENT_TIMEOUT))
    # Not synchronisation (the claim returns the run either way): it makes the blocked path the one tested.
    await asyncio.sleep(0.1)
    await broker.enqueue("queue-late", "run_late")
    delivery = await waiting
    assert delivery is not None and delivery.run_id == "run_late"


async def _reclaimed(broker: Broker, worker_id: str, deadline: float) -> list[Delivery]:
    """Polls `reclaim_abandoned` as a worker's heartbeat loop does, until it returns something."""
    async with asyncio.timeout(deadline):
        while True:
            reclaimed = await broker.reclaim_abandoned(worker_id)
            if reclaimed:
                return reclaimed
            await asyncio.sleep(broker.settings.lease_seconds / 5)


@pytest.fixture
async def short_lease_broker(redis_server: RedisServer) -> AsyncIterator[Broker]:
    """Redis only: the memory broker's workers share its process, so it never reclaims (tested below)."""
    broker = await started(own_settings(redis_server, lease_seconds=0.5))
    try:
        yield broker
    finally:
        await broker.stop()


async def test_a_second_worker_reclaims_a_run_after_the_lease(short_lease_broker: Broker) -> None:
    broker, lease = short_lease_broker, short_lease_broker.settings.lease_seconds
    assert await broker.claim("worker_2", ["queue-r"], 0.05) is None  # worker 2 polls the queue too
    await broker.enqueue("queue-r", "run_abandoned")
    first = await broker.claim("worker_1", ["queue-r"], 5)
    assert first is not None
    claimed_at = time.monotonic()
    assert await broker.reclaim_abandoned("worker_2") == []  # worker 1 is not presumed dead yet

    reclaimed = await _reclaimed(broker, "worker_2", lease * 10)  # worker 1 never heartbeats
    assert time.monotonic() - claimed_at >= lease * 0.9
    assert [d.run_id for d in reclaimed] == ["run_abandoned"]
    await broker.ack(reclaimed[0])
    await broker.heartbeat("worker_1", [first])  # too late: it may not take the run back
    await asyncio.sleep(lease * 1.5)  # long enough for anything pending to be reclaimable again
    assert await broker.reclaim_abandoned("worker_2") == []
    assert await broker.claim("worker_2", ["queue-r"], 0.05) is None


async def test_heartbeats_keep_a_run_from_being_reclaimed(short_lease_broker: Broker) -> None:
    broker, lease = short_lease_broker, short_lease_broker.settings.lease_seconds
    assert await broker.claim("worker_2", ["queue-h"], 0.05) is None
    await broker.enqueue("queue-h", "run_alive")
    delivery = await broker.claim("worker_1", ["queue-h"], 5)
    assert delivery is not None

    until = time.monotonic() + lease * 3
    while time.monotonic() < until:  # three leases of heartbeats every third of a lease
        await broker.heartbeat("worker_1", [delivery])
        assert await broker.reclaim_abandoned("worker_2") == []
        await asyncio.sleep(lease / 3)

    reclaimed = await _reclaimed(broker, "worker_2", lease * 10)  # the heartbeats stop
    assert [d.run_id for d in reclaimed] == ["run_alive"]


async def test_the_memory_broker_never_reclaims() -> None:
    broker = await started(Settings(secret_key=SECRET_KEY, lease_seconds=0.05))
    try:
        await broker.enqueue("queue-m", "run_kept")
        assert await broker.claim("worker_1", ["queue-m"], 1) is not None
        await asyncio.sleep(0.1)  # two leases without a heartbeat
        assert await broker.reclaim_abandoned("worker_2") == []
    finally:
        await broker.stop()


async def test_a_claim_over_several_tasks_takes_one_run_and_leaves_the_others(broker: Broker) -> None:
    await broker.enqueue("queue-m1", "run_m1")
    await broker.enqueue("queue-m2", "run_m2")
    first = await broker.claim("worker_1", ["queue-m1", "queue-m2"], 5)
    second = await broker.claim("worker_2", ["queue-m1", "queue-m2"], 5)  # not held back by worker 1
    assert first is not None and second is not None
    assert {first.run_id, second.run_id} == {"run_m1", "run_m2"}


async def test_cancelling_a_broker_call_always_cancels(broker: Broker) -> None:
    """A worker's loops are stopped by cancellation: a call must never swallow it (redis-py's writes
    under Python 3.11's wait_for did, whenever the cancel came as the write completed)."""
    await broker.claim("worker_c", ["queue-c"], 0.01)
    run = make_run()
    await broker.insert_run(run, None, 60)

    async def calls_forever() -> None:
        while True:
            await broker.get_run(run.id)
            await broker.heartbeat("worker_c", [])
            await broker.reclaim_abandoned("worker_c")
            await broker.claim("worker_c", ["queue-c"], 0.001)

    rng = random.Random(7)
    for _ in range(100):
        task = asyncio.create_task(calls_forever())
        await asyncio.sleep(rng.uniform(0, 0.003))
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=EVENT_TIMEOUT)
        assert done and task.cancelled(), "a cancellation was swallowed"


# wait token waiters
async def test_waitpoint_waiters_are_a_set_kept_with_the_token(broker: Broker, raw_redis: RawRedis) -> None:
    token = new_id("waitpoint_")
    await broker.insert_waitpoint(token, b"{}", now_ms() + 60_000, 60, None, 60)
    assert await broker.waitpoint_waiters(token) == []
    await broker.add_waitpoint_waiter(token, "run_a")
    await broker.add_waitpoint_waiter(token, "run_b")
    await broker.add_waitpoint_waiter(token, "run_a")  # added twice: held once
    assert sorted(await broker.waitpoint_waiters(token)) == ["run_a", "run_b"]

    unknown = new_id("waitpoint_")
    await broker.add_waitpoint_waiter(unknown, "run_a")  # nothing would wake it: not recorded
    assert await broker.waitpoint_waiters(unknown) == []

    if isinstance(broker, MemoryBroker):
        broker.evict_expired(time.monotonic() + 61)
        assert await broker.waitpoint_waiters(token) == [] and token not in broker._waiters
        return
    assert raw_redis is not None
    prefix = broker.settings.key_prefix
    token_ttl = await raw_redis.pttl(f"{prefix}:{{{token}}}:waitpoint")
    assert 0 < await raw_redis.pttl(f"{prefix}:{{{token}}}:waiters") <= token_ttl  # never outlives the token
    assert not await raw_redis.exists(f"{prefix}:{{{unknown}}}:waiters")


# run journals
async def test_an_append_at_an_expected_index_is_stored_once_in_order(broker: Broker) -> None:
    run_id, key = new_id("run_"), "ai"
    recorder = Recorder(broker)
    await broker.listen([stream_channel(run_id, key)])
    assert await broker.append_chunks(run_id, key, [b"0", b"1"], 0) == 0
    assert decode_chunks_message((await recorder.next())[1])[::2] == (0, [b"0", b"1"])
    # A retry whose first answer was lost: already there, so neither stored nor published again.
    assert await broker.append_chunks(run_id, key, [b"0", b"1"], 0) == 0
    assert await broker.append_chunks(run_id, key, [b"1"], 1) == 1
    assert await broker.append_chunks(run_id, key, [b"2"], 2) == 2
    assert decode_chunks_message((await recorder.next())[1])[::2] == (2, [b"2"])
    # other chunks there, a partial, a gap
    for chunks, first, fewer in (([b"x"], 1, False), ([b"2", b"3"], 2, False), ([b"4"], 5, True)):
        with pytest.raises(StreamOrderError) as refused:
            await broker.append_chunks(run_id, key, chunks, first)
        assert refused.value.fewer is fewer and refused.value.code == "stream_conflict"
    assert await broker.append_chunks(run_id, key, [b"3"]) == 3  # no expected index: at the end
    assert (await broker.read_chunks(run_id, key, 0, 100, 1 << 20)).chunks == [b"0", b"1", b"2", b"3"]
    assert recorder.messages.qsize() == 1 and decode_chunks_message((await recorder.next())[1])[::2] == (3, [b"3"])


async def test_a_failed_stream_takes_no_more_chunks(broker: Broker, raw_redis: RawRedis) -> None:
    run_id, key = new_id("run_"), "ai"
    recorder = Recorder(broker)
    await broker.listen([stream_channel(run_id, key)])
    assert await broker.stream_failure(run_id, key) is None
    await broker.append_chunks(run_id, key, [b"0", b"1"], 0)
    await recorder.next()
    assert await broker.fail_stream(run_id, key, "the backend stayed down") == 2
    assert decode_chunks_message((await recorder.next())[1])[::2] == (2, [])  # no chunks: it failed at 2
    assert await broker.fail_stream(run_id, key, "again") == 2  # the first failure stays
    assert await broker.stream_failure(run_id, key) == (2, "the backend stayed down")
    for first in (2, None, 0):
        with pytest.raises(StreamFailedError, match="stops at index 2") as failed:
            await broker.append_chunks(run_id, key, [b"2"], first)
        assert failed.value.next_index == 2 and failed.value.code == "stream_failed"
    assert await broker.stream_length(run_id, key) == 2 and recorder.messages.empty()
    assert await broker.stream_failure(run_id, "other") is None
    if raw_redis is not None:
        assert await raw_redis.pttl(f"{broker.settings.key_prefix}:{{{run_id}}}:stream-failed:{key}") > 0


async def test_a_stream_gets_its_epoch_with_its_first_write_and_a_new_one_once_its_storage_is_lost(
    broker: Broker, raw_redis: Redis | None
) -> None:
    """The epoch is stored in the same step as a stream's first chunk (or input value, or failure record), kept
    as long as the stream and published with its chunks. Lost storage (the stream's keys gone, as after a
    FLUSHALL; a new in-memory process) gives the same stream a new epoch."""
    run = make_run()
    await broker.insert_run(run, None, 60)
    recorder = Recorder(broker)
    await broker.listen([stream_channel(run.id, "ai"), stream_channel(run.id, "$in:a")])

    async def state(of: Broker, key: str) -> StreamPage:
        return await of.read_chunks(run.id, key, 0, 0, 0)

    assert await state(broker, "ai") == StreamPage(None, 0, [])
    await broker.append_chunks(run.id, "ai", [b"0"], 0)
    epoch = (await state(broker, "ai")).epoch
    assert epoch and decode_chunks_message((await recorder.next())[1]) == (0, epoch, [b"0"])
    await broker.append_chunks(run.id, "ai", [b"1"], 1)
    assert decode_chunks_message((await recorder.next())[1]).epoch == epoch
    assert await state(broker, "ai") == StreamPage(epoch, 2, [])
    await broker.append_input(run.id, "$in:a", b"1")
    assert decode_chunks_message((await recorder.next())[1]).epoch == (await state(broker, "$in:a")).epoch
    await broker.fail_stream(run.id, "empty", "down before its first chunk")
    assert (await state(broker, "empty")).epoch
    if raw_redis is not None:
        stream_key, epoch_key = (
            f"{broker.settings.key_prefix}:{{{run.id}}}:{k}:ai" for k in ("stream", "stream-epoch")
        )
        assert (
            await raw_redis.pttl(epoch_key) > 0
            and await raw_redis.pttl(stream_key) - await raw_redis.pttl(epoch_key) < 1000
        )
        await raw_redis.delete(stream_key, epoch_key)
        again = broker
    else:
        again = MemoryBroker(broker.settings)  # the process restarted
        await again.insert_run(run, None, 60)
    assert await state(again, "ai") == StreamPage(None, 0, [])
    await again.append_chunks(run.id, "ai", [b'"other"'], 0)
    renewed = (await state(again, "ai")).epoch
    assert renewed and renewed != epoch


async def test_a_writer_beaten_by_another_stops_alone_and_one_missing_chunks_fails_the_stream(broker: Broker) -> None:
    run_id = new_id("run_")
    other, mine = (StreamWriter(broker, Metrics(), run_id, "ai", 1 << 20) for _ in range(2))
    assert await other.append("theirs") == 0
    for value in ("mine", "later"):  # an older execution not fenced off yet: it stops, the stream goes on
        with pytest.raises(StreamOrderError):
            await mine.append(value)
    assert await broker.stream_failure(run_id, "ai") is None
    assert await other.append("theirs too") == 1
    # A resumed execution's writer that expects 5 chunks stored where there are 2: chunks were lost.
    resumed = StreamWriter(broker, Metrics(), run_id, "ai", 1 << 20, replayed=5)
    assert [await resumed.append(n) for n in range(5)] == list(range(5))  # replayed: not stored again
    with pytest.raises(StreamFailedError) as failed:
        await resumed.append("new")
    assert failed.value.next_index == 2
    assert (await broker.stream_failure(run_id, "ai") or (0, ""))[0] == 2
    with pytest.raises(StreamFailedError):
        await other.append("after")
    assert (await broker.read_chunks(run_id, "ai", 0, 10, 1 << 20)).chunks == [b'"theirs"', b'"theirs too"']


async def test_an_attempt_begins_only_above_the_current_one(broker: Broker) -> None:
    run_id = new_id("run_")
    assert await broker.current_attempt(run_id) == 0
    assert await broker.begin_attempt(run_id, 1)
    assert not await broker.begin_attempt(run_id, 1)  # another worker already began it
    assert await broker.current_attempt(run_id) == 1
    assert await broker.begin_attempt(run_id, 2)
    assert not await broker.begin_attempt(run_id, 1)  # never back
    assert await broker.current_attempt(run_id) == 2


async def test_an_entry_is_stored_only_at_its_position_by_the_current_attempt(broker: Broker) -> None:
    run_id = new_id("run_")
    entries = [b"\xff\xfe not utf-8 \x00", b"", b'{"step": 3}']
    assert await broker.read_journal(run_id) == []
    assert not await broker.append_journal(run_id, 1, 0, b"before the attempt")
    assert await broker.begin_attempt(run_id, 1)
    for position, entry in enumerate(entries[:2]):
        assert await broker.append_journal(run_id, 1, position, entry)
    assert not await broker.append_journal(run_id, 1, 1, b"taken position")
    assert not await broker.append_journal(run_id, 1, 3, b"a gap")
    assert not await broker.append_journal(run_id, 2, 2, b"an attempt not begun")

    assert await broker.begin_attempt(run_id, 2)  # the run was taken over
    assert not await broker.append_journal(run_id, 1, 2, b"stale attempt")
    assert await broker.append_journal(run_id, 2, 2, entries[2])
    assert await broker.read_journal(run_id) == entries  # in order, bytes exact


async def test_journals_of_two_runs_are_independent(broker: Broker) -> None:
    first, second = new_id("run_"), new_id("run_")
    assert await broker.begin_attempt(first, 3)
    assert await broker.begin_attempt(second, 1)
    assert await broker.append_journal(first, 3, 0, b"first")
    assert await broker.append_journal(second, 1, 0, b"second")
    assert (await broker.current_attempt(first), await broker.current_attempt(second)) == (3, 1)
    assert await broker.read_journal(first) == [b"first"]
    assert await broker.read_journal(second) == [b"second"]


async def test_the_memory_sweep_drops_a_journal_with_its_run_or_at_its_own_deadline() -> None:
    broker = MemoryBroker(Settings(secret_key=SECRET_KEY))  # not started: the test sweeps
    run = make_run()
    await broker.insert_run(run, None, 60)
    orphan = new_id("run_")  # its run is never stored
    for run_id in (run.id, orphan):
        assert await broker.begin_attempt(run_id, 1) and await broker.append_journal(run_id, 1, 0, b"entry")

    broker.evict_expired(broker._expiry[run.id])  # the run's deadline: before its journal's, written later
    assert await broker.read_journal(run.id) == [] and await broker.current_attempt(run.id) == 0
    assert await broker.read_journal(orphan) == [b"entry"]
    broker.evict_expired(time.monotonic() + broker.settings.retention_seconds + 1)
    assert await broker.read_journal(orphan) == [] and await broker.current_attempt(orphan) == 0


# streams
async def test_stream_pages_stop_at_count_and_bytes_but_never_empty(broker: Broker) -> None:
    run_id = new_id("run_")
    assert await broker.stream_length(run_id, "s") == 0
    assert await broker.read_chunks(run_id, "s", 0, 10, 100) == StreamPage(None, 0, [])
    assert await broker.append_chunks(run_id, "s", [b'"a"', b'"bb"', b"[1,2,3]"]) == 0
    assert await broker.append_chunks(run_id, "s", [b"4"]) == 3
    assert await broker.append_chunks(run_id, "other", [b"0"]) == 0  # each key is its own stream
    assert await broker.stream_length(run_id, "s") == 4

    async def chunks(start: int, count: int, max_bytes: int) -> list[bytes]:
        page = await broker.read_chunks(run_id, "s", start, count, max_bytes)
        assert page.length == 4 and page.epoch
        return page.chunks

    assert await chunks(0, 10, 1 << 20) == [b'"a"', b'"bb"', b"[1,2,3]", b"4"]
    assert await chunks(1, 2, 1 << 20) == [b'"bb"', b"[1,2,3]"]
    assert await chunks(0, 10, 7) == [b'"a"', b'"bb"']  # a third would make 14 bytes
    assert await chunks(2, 10, 1) == [b"[1,2,3]"]  # the first whatever its size
    assert await chunks(4, 10, 100) == []
    assert await chunks(1, 0, 100) == []  # no chunk asked: the epoch and length alone


async def test_the_memory_backend_stores_a_small_chunk_in_its_bytes_plus_under_100() -> None:
    """Chunks come from orjson.dumps, whose result keeps its ~4 KiB write buffer: storing those objects
    cost ~4 KiB per chunk for the retention (issue 12: 20,000 chunks of 2-6 bytes, +80 MB)."""
    broker = MemoryBroker(Settings(secret_key=SECRET_KEY))  # not started: the test sweeps
    run = make_run()
    await broker.insert_run(run, None, 60)
    count, data_bytes = 20_000, 0
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(count):
            chunk = orjson.dumps("x" * (i % 5))  # 2 to 6 bytes, as the SDK's StreamWriter encodes them
            data_bytes += len(chunk)
            await broker.append_chunks(run.id, "tokens", [chunk])
        grown = tracemalloc.get_traced_memory()[0] - before
        del chunk
        broker.evict_expired(time.monotonic() + broker.settings.retention_seconds + 1)
        swept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert (grown - data_bytes) / count < 100, f"{grown} bytes for {data_bytes} bytes of chunks"
    assert swept < grown / 100  # the retention sweep frees the stream with its run
    assert await broker.stream_length(run.id, "tokens") == 0


# small shared state
async def test_claim_once(broker: Broker) -> None:
    assert await broker.claim_once("token-1", 60)
    assert not await broker.claim_once("token-1", 60)
    assert await broker.claim_once("token-2", 60)


async def test_values_are_kept_for_their_ttl(broker: Broker) -> None:
    assert await broker.get_value("batch:absent") is None
    await broker.put_value("batch:one", b"3", 60)
    await broker.put_value("batch:short", b"1", 0.2)
    assert await broker.get_value("batch:one") == b"3"
    await asyncio.sleep(0.3)  # time passing is the behaviour under test
    assert await broker.get_value("batch:short") is None and await broker.get_value("batch:one") == b"3"


async def test_task_registry(broker: Broker) -> None:
    assert not await broker.task_exists("registered-a")
    await broker.register_tasks(["registered-a", "registered-b"])
    assert await broker.task_exists("registered-a")
    assert await broker.task_exists("registered-b")
    assert not await broker.task_exists("registered-c")


# retention
async def test_retention(backend_settings: Settings, raw_redis: RawRedis) -> None:
    retention = 60.0
    broker = await started(replace(backend_settings, retention_seconds=retention))
    try:
        run = make_run(tags=["kept"], batch_id="batch_kept")
        await broker.insert_run(run, "contract:retained", 30)
        assert await broker.claim_once("retained-token", 20)
        assert await broker.begin_attempt(run.id, 1) and await broker.append_journal(run.id, 1, 0, b"kept")
        assert await broker.append_input(run.id, "$in:kept", b"1", "kept-key") == 0

        if isinstance(broker, MemoryBroker):
            broker.evict_expired(time.monotonic() + retention / 2)
            assert await broker.get_run(run.id) == run
            broker.evict_expired(time.monotonic() + retention + 1)
            assert await broker.get_run(run.id) is None
            assert run.id not in broker._input_keys  # the input idempotency keys went with the run
            assert await broker.runs_with_tags(["kept"], 0, 10) == []
            assert await broker.runs_in_batch("batch_kept") == []
            fresh = make_run()
            assert (await broker.insert_run(fresh, "contract:retained", 30)) == (fresh, True)
            return

        assert isinstance(broker, RedisBroker) and raw_redis is not None
        prefix, limit_ms = backend_settings.key_prefix, retention * 1000
        run_key = f"{prefix}:{{{run.id}}}:run"
        for key, most_ms in [
            (run_key, limit_ms),
            (f"{prefix}:{{tag:kept}}:runs", limit_ms),
            (f"{prefix}:{{batch:batch_kept}}:runs", limit_ms),
            (f"{prefix}:{{idem:contract:retained}}", 30_000),
            (f"{prefix}:{{once:retained-token}}", 20_000),
            (f"{prefix}:{{{run.id}}}:journal", limit_ms),
            (f"{prefix}:{{{run.id}}}:attempt", limit_ms),
            (f"{prefix}:{{{run.id}}}:stream:$in:kept", limit_ms),
            (f"{prefix}:{{{run.id}}}:inkeys:$in:kept", limit_ms),
        ]:
            assert 0 < await raw_redis.pttl(key) <= most_ms, key

        for suffix in ("journal", "attempt"):  # an accepted begin or append refreshes both
            await raw_redis.pexpire(f"{prefix}:{{{run.id}}}:{suffix}", 5_000)
        assert await broker.append_journal(run.id, 1, 1, b"refreshed")
        assert await raw_redis.pttl(f"{prefix}:{{{run.id}}}:journal") > 5_000
        assert await raw_redis.pttl(f"{prefix}:{{{run.id}}}:attempt") > 5_000

        await raw_redis.pexpire(run_key, 5_000)
        assert await broker.replace_run(changed(run), 1)
        assert await raw_redis.pttl(run_key) > 5_000  # every write refreshes the TTL

        # An index drops members created before the retention when a run is added, and reading
        # an index skips runs that expired.
        old = make_run(tags=["trimmed"], created_at=now_ms() - int(limit_ms) - 1_000)
        gone, new = make_run(tags=["trimmed"]), make_run(tags=["trimmed"])
        for each in (old, gone, new):
            await broker.insert_run(each, None, 60)
        assert await raw_redis.zscore(f"{prefix}:{{tag:trimmed}}:runs", old.id) is None
        await raw_redis.delete(f"{prefix}:{{{gone.id}}}:run")  # as if it had expired
        assert [r.id for r in await broker.runs_with_tags(["trimmed"], 0, 10)] == [new.id]
    finally:
        await broker.stop()


# Redis only: outages
async def _ping_until_ready(broker: Broker) -> None:
    async with asyncio.timeout(EVENT_TIMEOUT):
        while True:
            try:
                await broker.ping()
                return
            except BackendUnavailableError:
                await asyncio.sleep(0.05)


async def test_listeners_resync_after_a_redis_restart(redis_server: RedisServer) -> None:
    broker = await started(own_settings(redis_server))
    recorder = Recorder(broker)
    try:
        run = make_run()
        await broker.listen([run_channel(run.id)])
        await broker.insert_run(run, None, 60)
        assert (await recorder.next_run())[1].id == run.id

        await asyncio.to_thread(redis_server.restart)  # everything stored is gone, like a crash
        await asyncio.wait_for(recorder.resynced.wait(), EVENT_TIMEOUT)

        # resync is called once the channel is subscribed again: nothing published after it is lost
        await broker.insert_run(run, None, 60)
        channel, received = await recorder.next_run()
        assert (channel, received.id) == (run_channel(run.id), run.id)
        await broker.ping()
    finally:
        await broker.stop()


async def test_every_method_fails_as_unavailable_while_redis_is_down(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_backend, "LISTEN_TIMEOUT_SECONDS", 0.5)
    broker = await started(own_settings(redis_server))
    recorder = Recorder(broker)
    run = make_run()
    await broker.insert_run(run, None, 60)
    await broker.listen([run_channel("run_listened")])
    await asyncio.to_thread(redis_server.stop)
    try:
        receipt = "1-0|rb:{queue}:task:queue-down"
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "ping": lambda: broker.ping(),
            "get_run": lambda: broker.get_run(run.id),
            "insert_run": lambda: broker.insert_run(make_run(tags=["down"]), "contract:down", 60),
            "replace_run": lambda: broker.replace_run(changed(run), 1),
            "runs_with_tags": lambda: broker.runs_with_tags(["down"], 0, 10),
            "runs_in_batch": lambda: broker.runs_in_batch("batch_down"),
            "listen": lambda: broker.listen([run_channel(run.id)]),
            "publish": lambda: broker.publish(run_channel(run.id), b"x"),
            "enqueue": lambda: broker.enqueue("queue-down", run.id),
            "claim": lambda: broker.claim("worker_1", ["queue-down"], 0.2),
            "ack": lambda: broker.ack(Delivery(run.id, receipt)),
            "heartbeat": lambda: broker.heartbeat("worker_1", [Delivery(run.id, receipt)]),
            "reclaim_abandoned": lambda: broker.reclaim_abandoned("worker_1"),
            "claim_once": lambda: broker.claim_once("token-down", 60),
            "register_tasks": lambda: broker.register_tasks(["down"]),
            "task_exists": lambda: broker.task_exists("down"),
            "add_waitpoint_waiter": lambda: broker.add_waitpoint_waiter("waitpoint_down", run.id),
            "waitpoint_waiters": lambda: broker.waitpoint_waiters("waitpoint_down"),
            "begin_attempt": lambda: broker.begin_attempt(run.id, 1),
            "append_journal": lambda: broker.append_journal(run.id, 1, 0, b"x"),
            "read_journal": lambda: broker.read_journal(run.id),
            "current_attempt": lambda: broker.current_attempt(run.id),
            "append_chunks": lambda: broker.append_chunks(run.id, "ai", [b"1"], 0),
            "fail_stream": lambda: broker.fail_stream(run.id, "ai", "down"),
            "stream_failure": lambda: broker.stream_failure(run.id, "ai"),
        }
        for name, call in calls.items():
            with pytest.raises(BackendUnavailableError, match="Redis"):
                await call()
                pytest.fail(f"{name} did not fail")
        await broker.unlisten([run_channel("run_listened")])  # never raises: it is called while cleaning up
    finally:
        await asyncio.to_thread(redis_server.restart)
    try:
        await asyncio.wait_for(recorder.resynced.wait(), EVENT_TIMEOUT)
        await _ping_until_ready(broker)
        assert await broker.get_run(run.id) is None  # the restart lost it
    finally:
        await broker.stop()


async def test_http_answers_503_while_redis_is_down(redis_server: RedisServer) -> None:
    settings = own_settings(redis_server)
    server, task = await start_server(settings, with_worker=False)
    headers = {"Authorization": f"Bearer {SECRET_KEY}"}
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            assert (await client.get("/readyz")).status_code == 200
            await asyncio.to_thread(redis_server.stop)
            try:
                ready = await client.get("/readyz")
                assert ready.status_code == 503 and ready.json()["ok"] is False
                run = await client.get("/api/v3/runs/run_0123456789abcdef01234567", headers=headers)
                assert run.status_code == 503
            finally:
                await asyncio.to_thread(redis_server.restart)
            await _ping_until_ready(server.app_bridge.broker)
            assert (await client.get("/readyz")).status_code == 200
    finally:
        await stop_server(server, task)


async def test_a_silently_dead_connection_is_detected_by_ping(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frozen Redis keeps TCP open but answers nothing: only the PING timeout notices."""
    monkeypatch.setattr(redis_backend, "PUBSUB_PING_INTERVAL_SECONDS", 0.2)
    monkeypatch.setattr(redis_backend, "PUBSUB_PING_TIMEOUT_SECONDS", 0.5)
    broker = await started(own_settings(redis_server))
    assert isinstance(broker, RedisBroker)
    recorder = Recorder(broker)
    try:
        await broker.listen([CANCEL_CHANNEL])
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            await asyncio.wait_for(broker._subscriptions.down.wait(), EVENT_TIMEOUT)
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)
        await asyncio.wait_for(recorder.resynced.wait(), EVENT_TIMEOUT)
        await broker.publish(CANCEL_CHANNEL, b"after")
        assert await recorder.next() == (CANCEL_CHANNEL, b"after")
    finally:
        await broker.stop()


async def test_a_healthy_connection_survives_its_pings(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PONG comes back in two shapes (subscribed to nothing, or to channels): both keep the connection."""
    monkeypatch.setattr(redis_backend, "PUBSUB_PING_INTERVAL_SECONDS", 0.05)
    broker = await started(own_settings(redis_server))
    assert isinstance(broker, RedisBroker)
    recorder = Recorder(broker)
    client = Redis.from_url(redis_server.url)

    async def pings_answered(count: int) -> None:
        """Waits until the server has answered `count` more PINGs (only this broker's pinger sends any)."""

        async def calls() -> int:
            stats = await client.info("commandstats")
            return int(stats.get("cmdstat_ping", {}).get("calls", 0))

        target = await calls() + count
        async with asyncio.timeout(EVENT_TIMEOUT):
            while True:
                if await calls() >= target:
                    return
                await asyncio.sleep(0.05)  # a server counter: nothing to await

    try:
        await pings_answered(5)  # not subscribed to anything yet
        await broker.listen([CANCEL_CHANNEL])
        await pings_answered(5)  # subscribed
        await broker.publish(CANCEL_CHANNEL, b"still-here")
        assert await recorder.next() == (CANCEL_CHANNEL, b"still-here")
        assert broker._subscriptions.live and not recorder.resynced.is_set()
    finally:
        await client.aclose()
        await broker.stop()
