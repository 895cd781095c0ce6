"""Public access tokens: HS256 JWTs with the official claims and scope grammar.

A scope is `action:type[:id]`, split on the first two colons only (ids may contain colons).
`admin` grants everything; type `all` matches any type; a scope without id matches every id;
routes that need `trigger`, `batchTrigger` or `update` also accept `write`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from bridge.durations import deadline_from
from bridge.errors import ForbiddenError, UnauthorizedError
from bridge.models import Run

ISSUER = "https://id.trigger.dev"
AUDIENCE = "https://api.trigger.dev"
DEFAULT_EXPIRATION = "15m"
INVALID_TOKEN_MESSAGE = "Public Access Token is invalid"
_WRITE_ALSO_GRANTS = frozenset({"trigger", "batchTrigger", "update"})
LEEWAY_SECONDS = 5  # a token's exp is honoured this much late: clocks of other machines drift
VERIFIED_TOKENS = 4096  # verified tokens kept (docs/limits.md)
MAX_CACHED_TOKEN_LENGTH = 2048  # longer tokens are verified on every use: the cache holds at most ~8 MiB

ScopeSpec = Mapping[str, Mapping[str, bool | str | Iterable[str]]] | Iterable[str]


def scope_strings(scopes: ScopeSpec) -> list[str]:
    """`{"read": {"runs": ["run_1"], "tags": True}}` -> `["read:runs:run_1", "read:tags"]`."""
    if not isinstance(scopes, Mapping):
        return [str(s) for s in scopes]
    result: list[str] = []
    for action, by_type in scopes.items():
        for resource_type, ids in by_type.items():
            if ids is True:
                result.append(f"{action}:{resource_type}")
            elif isinstance(ids, str):
                result.append(f"{action}:{resource_type}:{ids}")
            elif ids:
                result.extend(f"{action}:{resource_type}:{i}" for i in ids)
    return result


def _parse_scope(scope: str) -> tuple[str, str, str | None]:
    parts = scope.split(":", 2)
    if len(parts) == 1:
        return parts[0], "", None
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def _grant(scope: str, action: str, resource_type: str) -> tuple[bool, str | None]:
    """Whether `scope` grants `action` on `resource_type`, and the one id it is limited to (None: every id)."""
    if scope == "admin":
        return True, None
    granted_action, granted_type, granted_id = _parse_scope(scope)
    if granted_action not in (action, "*") and not (granted_action == "write" and action in _WRITE_ALSO_GRANTS):
        return False, None
    return granted_type in (resource_type, "all"), granted_id


@dataclass(frozen=True)
class Principal:
    """Who is calling: the backend (secret key, every right) or the holder of a public token."""

    is_backend: bool
    scopes: tuple[str, ...] = ()
    one_time_key: str | None = None  # set for one-time tokens: consumed on first use
    expires_at: float | None = None  # unix seconds

    def allows(self, action: str, resource_type: str, resource_id: str | None = None) -> bool:
        if self.is_backend:
            return True
        for scope in self.scopes:
            granted, granted_id = _grant(scope, action, resource_type)
            if granted and (granted_id is None or granted_id == resource_id):
                return True
        return False

    def require_some(self, action: str, resource_type: str) -> None:
        """Refuses a principal that may do `action` on no `resource_type` at all (whichever id), before a route
        does any work for it, even with nothing in the request to check one by one."""
        if not self.is_backend and not any(_grant(scope, action, resource_type)[0] for scope in self.scopes):
            raise ForbiddenError("Unauthorized: the token's scopes do not allow this")

    def allows_any(self, action: str, resources: Iterable[tuple[str, str | None]]) -> bool:
        return any(self.allows(action, rtype, rid) for rtype, rid in resources)

    def require_any(self, action: str, resources: Iterable[tuple[str, str | None]]) -> None:
        if not self.allows_any(action, resources):
            raise ForbiddenError("Unauthorized: the token's scopes do not allow this")


def create_public_token(
    secret_key: str,
    scopes: ScopeSpec,
    expiration_time: str | int | float | timedelta | datetime = DEFAULT_EXPIRATION,
    *,
    one_time: bool = False,
) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "bridge",
        "pub": True,
        "scopes": scope_strings(scopes),
        "iat": int(now.timestamp()),
        "exp": int(deadline_from(expiration_time, now).timestamp()),
    }
    if one_time:
        claims["otu"] = True
        claims["jti"] = secrets.token_hex(8)  # two one-time tokens minted in the same second must differ
    return jwt.encode(claims, secret_key, algorithm="HS256")


def run_access_token(secret_key: str, run_id: str) -> str:
    """What a trigger hands back: read the run and write its input streams, for an hour."""
    return create_public_token(secret_key, [f"read:runs:{run_id}", f"write:inputStreams:{run_id}"], "1h")


def waitpoint_access_token(secret_key: str, token_id: str) -> str:
    """What creating a wait token hands back: complete that token, for 24 hours (as the official)."""
    return create_public_token(secret_key, [f"write:waitpoints:{token_id}"], "24h")


def _verify(secret_key: str, bearer: str) -> Principal:
    try:
        claims = jwt.decode(
            bearer,
            secret_key,
            algorithms=["HS256"],
            audience=AUDIENCE,
            options={"require": ["exp"]},
            leeway=LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError as exc:
        raise UnauthorizedError(f"{INVALID_TOKEN_MESSAGE}: it has expired") from exc
    except jwt.PyJWTError as exc:
        raise UnauthorizedError(INVALID_TOKEN_MESSAGE) from exc
    scopes = claims.get("scopes")
    if claims.get("pub") is not True or not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise UnauthorizedError(INVALID_TOKEN_MESSAGE)
    one_time_key = hashlib.sha256(bearer.encode()).hexdigest() if claims.get("otu") is True else None
    return Principal(is_backend=False, scopes=tuple(scopes), one_time_key=one_time_key, expires_at=float(claims["exp"]))


class VerifiedTokens:
    """The principals of the tokens verified lately, each until its token expires: a page's subscriptions and
    polls with one token decode it once. At most `size`, least recently used out first; a token is looked up
    with the secret key it was verified with, so one signed with another (or a former) key is verified anew.
    Tokens that fail are not kept: each use of one is verified again."""

    def __init__(self, size: int = VERIFIED_TOKENS, clock: Callable[[], float] = time.time) -> None:
        self._size = size
        self._clock = clock
        self._principals: OrderedDict[tuple[str, str], Principal] = OrderedDict()

    def __len__(self) -> int:
        return len(self._principals)

    def principal(self, secret_key: str, bearer: str) -> Principal:
        key = (secret_key, bearer)
        principal = self._principals.get(key)
        if principal is None:
            principal = _verify(secret_key, bearer)
            if len(bearer) <= MAX_CACHED_TOKEN_LENGTH:
                self._principals[key] = principal
                if len(self._principals) > self._size:
                    self._principals.popitem(last=False)
            return principal
        assert principal.expires_at is not None  # `_verify` requires exp
        if self._clock() > principal.expires_at + LEEWAY_SECONDS:
            del self._principals[key]
            raise UnauthorizedError(f"{INVALID_TOKEN_MESSAGE}: it has expired")
        self._principals.move_to_end(key)
        return principal


_verified = VerifiedTokens()


def authenticate(secret_key: str, bearer: str | None) -> Principal:
    """The principal behind `Authorization: Bearer <token>`; raises UnauthorizedError."""
    if not bearer:
        raise UnauthorizedError("Missing access token: send Authorization: Bearer <token>")
    if hmac.compare_digest(bearer.encode(), secret_key.encode()):
        return Principal(is_backend=True)
    return _verified.principal(secret_key, bearer)


def bearer_from_header(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def require_run_read(principal: Principal, run: Run) -> None:
    """What reading a run needs: `read` on the run, its task, any of its tags, or its batch."""
    principal.require_any("read", _run_read_resources(run.id, run.task_identifier, run.tags, run.batch_id))


def _run_read_resources(
    run_id: str, task_id: str, tags: Iterable[str], batch_id: str | None
) -> list[tuple[str, str | None]]:
    """What a run-read route accepts: the run, its task, any of its tags, or its batch."""
    resources: list[tuple[str, str | None]] = [("runs", run_id), ("tasks", task_id)]
    resources.extend(("tags", tag) for tag in tags)
    if batch_id:
        resources.append(("batch", batch_id))
    return resources
