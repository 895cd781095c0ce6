"""Wait tokens: a task pauses until a person, a page or a webhook completes its token.

A token is stored in the broker in two parts: its creation record (id, deadline, idempotency key,
tags), written once, and its result (COMPLETED with the output, or TIMED_OUT), written once by
whoever comes first — `complete`, or the timer at the deadline. Later completions succeed and keep
the first result, so a doubled click or a retried webhook is harmless.

Timeouts: every process's `WaitpointTimer` fires the deadlines that passed, from the broker's
deadline index, so a deadline that passed while every process was down fires when one comes back.
Reads never depend on the timer having run: a token past its deadline reads (and is stored) as
TIMED_OUT, and a completion arriving after the deadline finds it timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NoReturn

import orjson

from bridge.aio import cancel_and_wait
from bridge.backends.base import WaitpointStore
from bridge.backends.channels import waitpoint_channel
from bridge.clock import Clock
from bridge.config import Settings
from bridge.durations import Moment, moment_ms, parse_duration_seconds
from bridge.errors import BridgeError, NotFoundError, ValidationError
from bridge.models import iso_from_ms, new_id
from bridge.outages import OutageLog
from bridge.runtime.engine import MAX_IDEMPOTENCY_KEY_LENGTH, check_size, validate_tags
from bridge.runtime.hub import Hub, Message

log = logging.getLogger(__name__)
FIRST = asyncio.FIRST_COMPLETED

TIMEOUT_ERROR_CODE = "TRIGGER_WAITPOINT_TIMEOUT"  # the official code, in a timed-out token's output
TIMER_POLL_SECONDS = 1.0  # deadlines set by other processes are noticed within this long
TIMER_BATCH = 100  # deadlines read per broker round trip, then fired concurrently
TIMER_RETRY_SECONDS = 1.0  # pause after the backend was unavailable
DEADLINE_GRACE_SECONDS = 0.5  # a waiter reads its token itself this long after the deadline, if not woken
WAIT_RECHECK_SECONDS = 60.0  # ...and at least this often: a lost notification delays a wait by at most this
Timeout = Moment


class TokenStatus(StrEnum):
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    TIMED_OUT = "TIMED_OUT"


class WaitpointTimeoutError(BridgeError):
    """A token reached its timeout before anyone completed it."""

    code = "waitpoint_timeout"
    status = 408


@dataclass
class WaitToken:
    id: str
    created_at: int  # ms since the epoch, like every time below
    timeout_at: int  # without a timeout given: when the retention ends
    idempotency_key: str | None = None
    idempotency_key_expires_at: int | None = None
    tags: list[str] = field(default_factory=list)
    status: TokenStatus = TokenStatus.WAITING
    output: Any = None  # the completion's data; for TIMED_OUT, the official timeout error object
    completed_at: int | None = None

    @property
    def is_done(self) -> bool:
        return self.status is not TokenStatus.WAITING

    def spec_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "createdAt": self.created_at,
                "timeoutAt": self.timeout_at,
                "idempotencyKey": self.idempotency_key,
                "idempotencyKeyExpiresAt": self.idempotency_key_expires_at,
                "tags": self.tags,
            }
        )

    @classmethod
    def from_storage(cls, spec: bytes, result: bytes | None) -> WaitToken:
        data = orjson.loads(spec)
        token = cls(
            id=data["id"],
            created_at=data["createdAt"],
            timeout_at=data["timeoutAt"],
            idempotency_key=data["idempotencyKey"],
            idempotency_key_expires_at=data["idempotencyKeyExpiresAt"],
            tags=data["tags"],
        )
        if result is not None:
            token.apply_result(result)
        return token

    def apply_result(self, result: bytes) -> None:
        data = orjson.loads(result)
        self.status = TokenStatus(data["status"])
        self.output = data["output"]
        self.completed_at = data["completedAt"]

    def result_dict(self) -> dict[str, Any]:
        """The outcome of a done token, as a run's journal records it."""
        return {"status": self.status.value, "output": self.output}

    def timeout_error(self) -> WaitpointTimeoutError:
        return timeout_error(self.id, self.output)


def timeout_error(token_id: str, output: Any) -> WaitpointTimeoutError:
    """The error of a timed-out token, from its stored output (the official code and message)."""
    message = output.get("message") if isinstance(output, dict) else None
    return WaitpointTimeoutError(message or f"Waitpoint {token_id} timed out")


def result_bytes(status: TokenStatus, output: Any, completed_at: int) -> bytes:
    return orjson.dumps({"status": status.value, "output": output, "completedAt": completed_at})


def timeout_result(timeout_at: int) -> bytes:
    message = f"Waitpoint timed out at {iso_from_ms(timeout_at)}"
    return result_bytes(TokenStatus.TIMED_OUT, {"code": TIMEOUT_ERROR_CODE, "message": message}, timeout_at)


def callback_signature(secret_key: str, token_id: str) -> str:
    """The hex HMAC-SHA256 of the token id, keyed with the secret key: the callback URL's last segment."""
    return hmac.new(secret_key.encode(), token_id.encode(), hashlib.sha256).hexdigest()


def valid_callback_signature(secret_key: str, token_id: str, signature: str) -> bool:
    # bytes: compare_digest refuses non-ASCII str, and a URL may carry anything
    return hmac.compare_digest(callback_signature(secret_key, token_id).encode(), signature.encode())


async def _nothing_to_resume(token_id: str) -> None:
    return None


class Waitpoints:
    """Creating, completing, reading and waiting for wait tokens, over any broker."""

    def __init__(
        self,
        store: WaitpointStore,
        hub: Hub,
        settings: Settings,
        resume_waiters: Callable[[str], Awaitable[None]] = _nothing_to_resume,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.settings = settings
        self.clock = clock or Clock()  # deadlines are set and found due on it
        self.timer = WaitpointTimer(self)
        self.clock.on_jump(self.timer.wake)
        self.resume_waiters = resume_waiters  # queues the runs parked on a token once it is done

    def callback_url(self, token_id: str) -> str:
        """Where a webhook completes the token: the bridge's public URL, signed for this token."""
        signature = callback_signature(self.settings.secret_key, token_id)
        return f"{self.settings.public_url}/api/v1/waitpoints/tokens/{token_id}/callback/{signature}"

    # validation
    def _timeout_at(self, timeout: Timeout | None, now: int) -> int:
        """The deadline in ms: the given one (a past date means now), or the retention's end without one:
        a token is deleted then, so nothing waits for it longer."""
        limit = self.settings.limits.max_wait_token_timeout_seconds
        if timeout is None:
            return now + int(min(self.settings.retention_seconds, limit) * 1000)
        deadline = moment_ms(timeout, now, "timeout")
        if deadline - now > limit * 1000:
            raise ValidationError(f"a wait token's timeout is at most {limit / 86400:g} days")
        return max(deadline, now)

    def check_output(self, output: Any) -> None:
        check_size("the completion data", output, self.settings.limits.max_payload_bytes)

    # operations
    async def create(
        self,
        *,
        timeout: Timeout | None = None,
        idempotency_key: str | None = None,
        idempotency_key_ttl: str | int | float | None = None,
        tags: Any = None,
    ) -> tuple[WaitToken, bool]:
        """Stores a new token; returns (token, created). A live idempotency key returns its token instead."""
        now = self.clock.now_ms()
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH
        ):
            raise ValidationError(f"idempotencyKey is a string of 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
        timeout_at = self._timeout_at(timeout, now)
        # Kept for the retention after its deadline, so a late reader still sees TIMED_OUT.
        ttl = self.settings.retention_seconds + (timeout_at - now) / 1000
        key_ttl = min(parse_duration_seconds(idempotency_key_ttl), ttl) if idempotency_key_ttl is not None else ttl
        token = WaitToken(
            id=new_id("waitpoint_"),
            created_at=now,
            timeout_at=timeout_at,
            idempotency_key=idempotency_key,
            idempotency_key_expires_at=now + int(key_ttl * 1000) if idempotency_key else None,
            tags=validate_tags(tags, self.settings.limits, "a wait token"),
        )
        scope = f"waitpoint:{idempotency_key}" if idempotency_key else None
        stored_id, created = await self.store.insert_waitpoint(
            token.id, token.spec_bytes(), timeout_at, ttl, scope, key_ttl
        )
        if created:
            self.timer.wake()
            return token, True
        return await self.retrieve(stored_id), False

    async def timer_at(self, deadline_ms: int) -> str:
        """A token of the bridge's own that only times out, at `deadline_ms`: what starts a delayed run and
        ends a run's TTL (`RunEngine.timer_at`), fired once by whichever process's timer comes first."""
        token, _ = await self.create(timeout=datetime.fromtimestamp(deadline_ms / 1000, UTC))
        return token.id

    async def retrieve(self, token_id: str) -> WaitToken:
        """The token as it is now; one past its deadline is timed out first, whatever the timer did."""
        stored = await self.store.get_waitpoint(token_id)
        if stored is None:
            raise NotFoundError(f"Waitpoint not found: {token_id[:80]}")
        token = WaitToken.from_storage(*stored)
        if not token.is_done and self.clock.now_ms() >= token.timeout_at:
            await self._store_result(token, timeout_result(token.timeout_at))
        return token

    async def complete(self, token_id: str, output: Any) -> WaitToken:
        """Completes the token with `output`, unless it is done already: then it keeps its first result."""
        self.check_output(output)
        token = await self.retrieve(token_id)
        if not token.is_done:
            await self._store_result(token, result_bytes(TokenStatus.COMPLETED, output, self.clock.now_ms()))
            await self.store.forget_waitpoint_deadline(token.id)  # done: nothing left for the timer
        # Also when it was done already: a retried completion finishes what a failed one started.
        await self.resume_waiters(token.id)
        return token

    async def time_out(self, token_id: str) -> None:
        """The timer's step for one due deadline (a token that expired meanwhile is only forgotten)."""
        try:
            done = (await self.retrieve(token_id)).is_done
        except NotFoundError:
            done = True
        except BridgeError:
            raise  # the backend is unavailable: the deadline stays indexed, the timer retries
        except Exception:  # a stored record this code cannot read: fired never, retried never
            log.exception("wait token %s: could not time it out; dropping its deadline", token_id)
            done = True
        if done:  # else this clock is a little behind the deadline's: it is due again in a moment
            await self.resume_waiters(token_id)  # before forgetting: a failure leaves the deadline to retry
            await self.store.forget_waitpoint_deadline(token_id)

    async def _store_result(self, token: WaitToken, result: bytes) -> None:
        """Stores `result` unless another one won; `token` ends up holding the winner."""
        stored = await self.store.complete_waitpoint(token.id, result, self.settings.retention_seconds)
        if stored is None:
            raise NotFoundError(f"Waitpoint not found: {token.id}")
        token.apply_result(stored)

    async def wait_done(
        self,
        token_id: str,
        hold: float,
        release: asyncio.Event,
        suspend: Callable[[], AbstractAsyncContextManager[None]],
        give_up: Callable[[], Awaitable[NoReturn]],
    ) -> WaitToken:
        """The token once it is done. A token done already returns at once; else `suspend` is entered (the
        run shows WAITING, its worker slot is free) and, should the token not be done within `hold` seconds
        or `release` be set, `give_up` is awaited inside it (it parks the run and raises).

        The listener is attached before the token is read (live first, then the stored state: nothing falls
        between). The published result normally ends the wait. Should it be lost (a failed re-read after a
        Redis reconnection, a deadline whose timer entry was never written), the waiter reads the token
        itself at its deadline and at least every WAIT_RECHECK_SECONDS: reading times it out."""
        async with self._watch(token_id) as done:
            token = await self.retrieve(token_id)
            if token.is_done:
                return token
            loop = asyncio.get_running_loop()
            hold_until = loop.time() + hold
            released = asyncio.ensure_future(release.wait())
            watched: set[asyncio.Future[Any]] = {done, released}
            try:
                async with suspend():
                    while not done.done():
                        until_deadline = (token.timeout_at - self.clock.now_ms()) / 1000 + DEADLINE_GRACE_SECONDS
                        until_hold = hold_until - loop.time()
                        bound = min(until_deadline, until_hold, WAIT_RECHECK_SECONDS)
                        await asyncio.wait(watched, timeout=max(0.0, bound), return_when=FIRST)
                        if done.done():
                            break
                        if released.done() or loop.time() >= hold_until:
                            await give_up()
                        if bound != until_hold:  # the deadline passed, or a recheck is due: read it ourselves
                            token = await self.retrieve(token_id)
                            if token.is_done:
                                return token
            finally:
                await cancel_and_wait(released)
            token.apply_result(done.result())
            return token

    @contextlib.asynccontextmanager
    async def _watch(self, token_id: str) -> AsyncIterator[asyncio.Future[bytes]]:
        """A future of the token's result, attached before the caller reads the token (live first, then
        the stored state: nothing falls between). On a resync it re-reads the stored state."""
        done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        rereads: set[asyncio.Task[None]] = set()

        async def reread() -> None:
            try:
                stored = await self.store.get_waitpoint(token_id)
            except BridgeError as exc:
                log.warning("wait token %s: could not re-read after a resync: %s", token_id, exc.message)
                return
            if stored is not None and stored[1] is not None and not done.done():
                done.set_result(stored[1])

        def on_message(_: str, message: Message | None) -> None:
            if done.done():
                return
            if message is not None:
                done.set_result(message.raw)
                return
            task = asyncio.create_task(reread())
            rereads.add(task)
            task.add_done_callback(rereads.discard)

        channel = waitpoint_channel(token_id)
        await self.hub.attach(channel, on_message)
        try:
            yield done
        finally:
            for task in list(rereads):
                await cancel_and_wait(task)
            await self.hub.detach(channel, on_message)


class WaitpointTimer:
    """Fires passed deadlines: sleeps until the nearest one (at most TIMER_POLL_SECONDS), fires, repeats."""

    def __init__(self, waitpoints: Waitpoints) -> None:
        self._waitpoints = waitpoints
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._outage = OutageLog(log, "wait token timer")

    def start(self) -> None:
        self._loop = asyncio.create_task(self._fire_forever())

    async def stop(self) -> None:
        await cancel_and_wait(self._loop)
        self._loop = None

    @property
    def stopped(self) -> bool:
        return self._loop is None

    def wake(self) -> None:
        """A deadline was added: it may be nearer than the one being slept on."""
        self._wake.set()

    async def fire_due(self) -> float:
        """Fires every passed deadline; returns how long to sleep until the next one."""
        store = self._waitpoints.store
        while True:
            due = await store.due_waitpoints(self._waitpoints.clock.now_ms(), TIMER_BATCH)
            outcomes = await asyncio.gather(*(self._waitpoints.time_out(t) for t in due), return_exceptions=True)
            failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failure is not None:
                raise failure
            if len(due) < TIMER_BATCH:
                break
        nearest = await store.next_waitpoint_deadline()
        if nearest is None:
            return TIMER_POLL_SECONDS
        return min(TIMER_POLL_SECONDS, max(0.0, (nearest - self._waitpoints.clock.now_ms()) / 1000))

    async def _fire_forever(self) -> None:
        while True:
            self._wake.clear()
            try:
                delay = await self.fire_due()
                self._outage.recovered()
            except BridgeError as exc:
                self._outage.failed(exc.message)
                delay = TIMER_RETRY_SECONDS
            except Exception:  # a bug must not stop every timeout in this process
                log.exception("wait token timer failed; retrying")
                delay = TIMER_RETRY_SECONDS
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
