"""Public access tokens: the scope grammar, token checks and the claims we mint (no server needed)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from bridge.errors import ForbiddenError, UnauthorizedError, ValidationError
from bridge.models import Run
from bridge.runtime.access import (
    AUDIENCE,
    ISSUER,
    LEEWAY_SECONDS,
    MAX_CACHED_TOKEN_LENGTH,
    Principal,
    VerifiedTokens,
    authenticate,
    bearer_from_header,
    create_public_token,
    require_run_read,
    run_access_token,
    scope_strings,
)

SECRET = "tr_dev_auth_test_secret_" + "0123456789abcdef" * 3  # 72 bytes: long enough for HS512 too


def principal(*scopes: str) -> Principal:
    return Principal(is_backend=False, scopes=scopes)


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE)
    return decoded


def signed(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bridge", "pub": True, "scopes": ["read:runs"]}
    base["exp"] = int(time.time()) + 600
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, secret, algorithm=algorithm)


# the scope grammar


@pytest.mark.parametrize(
    ("scope", "request_", "allowed"),
    [
        # action:type:id
        ("read:runs:run_1", ("read", "runs", "run_1"), True),
        ("read:runs:run_1", ("read", "runs", "run_2"), False),
        ("read:runs:run_1", ("read", "tasks", "run_1"), False),
        ("read:runs:run_1", ("read", "runs", None), False),  # one run does not grant "every run"
        # split on the first two colons only: ids may contain colons
        ("read:tags:user:42", ("read", "tags", "user:42"), True),
        ("read:tags:user:42", ("read", "tags", "user"), False),
        ("read:tags:user:42", ("read", "tags", "42"), False),
        ("read:tags:a:b:c", ("read", "tags", "a:b:c"), True),
        # no id: every id, and the type itself
        ("read:runs", ("read", "runs", "run_9"), True),
        ("read:runs", ("read", "runs", None), True),
        ("read:runs", ("read", "tags", "t"), False),
        # type `all`: any type
        ("read:all", ("read", "runs", "run_1"), True),
        ("read:all", ("read", "batch", "batch_1"), True),
        ("read:all", ("write", "runs", "run_1"), False),
        ("read:all:x", ("read", "tags", "x"), True),
        ("read:all:x", ("read", "tags", "y"), False),
        # admin: everything
        ("admin", ("read", "runs", "run_1"), True),
        ("admin", ("write", "inputStreams", "run_1"), True),
        ("admin", ("trigger", "tasks", "anything"), True),
        # write also grants trigger, batchTrigger and update
        ("write:tasks:echo", ("trigger", "tasks", "echo"), True),
        ("write:tasks:echo", ("batchTrigger", "tasks", "echo"), True),
        ("write:runs:run_1", ("update", "runs", "run_1"), True),
        ("write:tasks:echo", ("trigger", "tasks", "other"), False),
        ("write:runs:run_1", ("read", "runs", "run_1"), False),  # write is not read
        # read grants nothing else
        ("read:runs:run_1", ("write", "runs", "run_1"), False),
        ("read:tasks:echo", ("trigger", "tasks", "echo"), False),
        ("read:runs:run_1", ("update", "runs", "run_1"), False),
        # trigger is only trigger
        ("trigger:tasks:echo", ("trigger", "tasks", "echo"), True),
        ("trigger:tasks:echo", ("read", "tasks", "echo"), False),
        ("trigger:tasks:echo", ("write", "tasks", "echo"), False),
        # the `*` action
        ("*:tasks:echo", ("trigger", "tasks", "echo"), True),
        ("*:tasks:echo", ("read", "tasks", "echo"), True),
        ("*:tasks:echo", ("read", "runs", "echo"), False),
        # malformed scopes grant nothing
        ("read", ("read", "runs", "run_1"), False),
        ("read:", ("read", "runs", "run_1"), False),
        ("", ("read", "runs", "run_1"), False),
        ("READ:runs", ("read", "runs", "run_1"), False),
    ],
)
def test_scope_grammar(scope: str, request_: tuple[str, str, str | None], allowed: bool) -> None:
    assert principal(scope).allows(*request_) is allowed


def test_any_one_of_several_scopes_suffices() -> None:
    holder = principal("read:runs:run_1", "write:inputStreams:run_1")
    assert holder.allows("read", "runs", "run_1")
    assert holder.allows("write", "inputStreams", "run_1")
    assert not holder.allows("write", "inputStreams", "run_2")


def test_no_scopes_allow_nothing_and_the_backend_everything() -> None:
    assert not principal().allows("read", "runs", "run_1")
    assert Principal(is_backend=True).allows("write", "anything", "at_all")


def test_some_right_of_a_kind_is_any_scope_of_that_action_and_type_whatever_its_id() -> None:
    for scopes in (("batchTrigger:tasks:echo",), ("write:tasks",), ("batchTrigger:all:x",), ("admin",)):
        principal(*scopes).require_some("batchTrigger", "tasks")
    Principal(is_backend=True).require_some("batchTrigger", "tasks")
    for scopes in ((), ("read:runs",), ("trigger:tasks:echo",), ("batchTrigger:runs:echo",)):
        with pytest.raises(ForbiddenError):
            principal(*scopes).require_some("batchTrigger", "tasks")


def test_reading_a_run_needs_read_on_the_run_its_task_one_of_its_tags_or_its_batch() -> None:
    run = Run(id="run_1", task_identifier="echo", tags=["user:1", "team:a"], batch_id="batch_1")
    for scope in ("read:runs:run_1", "read:tasks:echo", "read:tags:team:a", "read:batch:batch_1", "read:runs"):
        require_run_read(principal(scope), run)
    for scopes in (("read:tags:team:b", "write:runs:run_1"), ("read:runs:run_2",), ("read:batch:batch_2",)):
        with pytest.raises(ForbiddenError):
            require_run_read(principal(*scopes), run)
    untagged = Run(id="run_2", task_identifier="echo")
    with pytest.raises(ForbiddenError):
        require_run_read(principal("read:tags:user:1"), untagged)


def test_scope_strings_from_the_official_object_form() -> None:
    spec = {"read": {"runs": ["run_1", "run_2"], "tags": True, "batch": "batch_1", "tasks": False}, "write": {}}
    assert scope_strings(spec) == ["read:runs:run_1", "read:runs:run_2", "read:tags", "read:batch:batch_1"]
    assert scope_strings(["read:runs", "admin"]) == ["read:runs", "admin"]
    assert scope_strings({"read": {"runs": []}}) == []


# checking tokens


def test_the_secret_key_is_the_backend() -> None:
    assert authenticate(SECRET, SECRET) == Principal(is_backend=True)


def test_a_valid_token_gives_its_scopes_and_expiry() -> None:
    token = create_public_token(SECRET, ["read:runs:run_1"], "1h")
    holder = authenticate(SECRET, token)
    assert holder.is_backend is False and holder.scopes == ("read:runs:run_1",)
    assert holder.one_time_key is None
    assert holder.expires_at == claims_of(token)["exp"]


def test_a_one_time_token_carries_a_key_derived_from_the_token() -> None:
    token = create_public_token(SECRET, ["trigger:tasks:echo"], one_time=True)
    assert authenticate(SECRET, token).one_time_key == hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize("bearer", [None, ""])
def test_a_missing_token_is_unauthorized(bearer: str | None) -> None:
    with pytest.raises(UnauthorizedError, match="Missing access token"):
        authenticate(SECRET, bearer)


def test_an_expired_token_is_unauthorized() -> None:
    token = create_public_token(SECRET, ["read:runs"], datetime.now(UTC) - timedelta(minutes=1))
    with pytest.raises(UnauthorizedError, match="expired") as caught:
        authenticate(SECRET, token)
    assert caught.value.code == "unauthorized"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(create_public_token("tr_dev_some_other_secret_0123456789abc", ["read:runs"]), id="wrong secret"),
        pytest.param(signed({"pub": None}), id="no pub"),
        pytest.param(signed({"pub": False}), id="pub false"),
        pytest.param(signed({"pub": "true"}), id="pub not a boolean"),
        pytest.param(signed({"scopes": None}), id="no scopes"),
        pytest.param(signed({"scopes": "read:runs"}), id="scopes a string"),
        pytest.param(signed({"scopes": {"read": {"runs": True}}}), id="scopes an object"),
        pytest.param(signed({"scopes": ["read:runs", 7]}), id="scopes not all strings"),
        pytest.param(signed({"aud": "https://example.com"}), id="wrong audience"),
        pytest.param(signed({"aud": None}), id="no audience"),
        pytest.param(signed({"exp": None}), id="no expiry"),
        pytest.param(signed({}, algorithm="HS512"), id="another algorithm"),
        pytest.param(jwt.encode({"pub": True, "scopes": ["admin"]}, None, algorithm="none"), id="unsigned"),
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param("a.b.c", id="three garbage parts"),
    ],
)
def test_an_invalid_token_is_unauthorized(token: str) -> None:
    with pytest.raises(UnauthorizedError, match="Public Access Token is invalid"):
        authenticate(SECRET, token)


def test_the_signed_helper_makes_a_valid_token() -> None:  # so the cases above fail for the reason they name
    assert authenticate(SECRET, signed({})).scopes == ("read:runs",)


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer abc", "abc"), ("Bearer  abc ", "abc"), ("Basic abc", None), ("Bearer ", None)],
)
def test_bearer_from_header(header: str, token: str | None) -> None:
    assert bearer_from_header(header) == token
    assert bearer_from_header(None) is None


# minting tokens


def test_created_token_has_the_official_claims() -> None:
    before = int(time.time())
    token = create_public_token(SECRET, {"read": {"runs": ["run_1"], "tags": True}}, "2h")
    claims = claims_of(token)
    assert claims["iss"] == ISSUER == "https://id.trigger.dev"
    assert claims["aud"] == AUDIENCE == "https://api.trigger.dev"
    assert claims["pub"] is True and claims["sub"] == "bridge"
    assert claims["scopes"] == ["read:runs:run_1", "read:tags"]
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 7200
    assert "otu" not in claims
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


@pytest.mark.parametrize(
    ("expiration", "seconds"),
    [("15m", 900), ("30s", 30), ("1d", 86_400), ("1w", 604_800), (90, 90), (timedelta(minutes=5), 300)],
)
def test_expiration_as_a_duration(expiration: Any, seconds: int) -> None:
    claims = claims_of(create_public_token(SECRET, ["read:runs"], expiration))
    assert claims["exp"] - claims["iat"] == seconds


def test_default_expiration_is_fifteen_minutes() -> None:
    claims = claims_of(create_public_token(SECRET, ["read:runs"]))
    assert claims["exp"] - claims["iat"] == 900


def test_expiration_as_an_instant_naive_meaning_utc() -> None:
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    assert claims_of(create_public_token(SECRET, ["read:runs"], at))["exp"] == int(at.timestamp())
    naive = at.replace(tzinfo=None)
    assert claims_of(create_public_token(SECRET, ["read:runs"], naive))["exp"] == int(at.timestamp())


@pytest.mark.parametrize("expiration", ["soon", "15 minutes", "-5m", -1, True])
def test_invalid_expiration_is_refused(expiration: Any) -> None:
    with pytest.raises(ValidationError):
        create_public_token(SECRET, ["read:runs"], expiration)


def test_one_time_token_has_otu() -> None:
    assert claims_of(create_public_token(SECRET, ["trigger:tasks:echo"], one_time=True))["otu"] is True


def test_run_access_token_reads_the_run_and_writes_its_input_streams_for_an_hour() -> None:
    claims = claims_of(run_access_token(SECRET, "run_1"))
    assert claims["scopes"] == ["read:runs:run_1", "write:inputStreams:run_1"]
    assert claims["exp"] - claims["iat"] == 3600
    holder = authenticate(SECRET, run_access_token(SECRET, "run_1"))
    assert holder.allows("read", "runs", "run_1") and holder.allows("write", "inputStreams", "run_1")
    assert not holder.allows("read", "runs", "run_2") and not holder.allows("write", "runs", "run_1")


# verified tokens, kept until they expire


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_verified_token_is_decoded_once_and_gives_the_same_principal() -> None:
    verified = VerifiedTokens()
    token = create_public_token(SECRET, ["read:runs:run_1"], "1h")
    first = verified.principal(SECRET, token)
    assert verified.principal(SECRET, token) is first and len(verified) == 1


def test_a_cached_token_is_refused_once_it_expired() -> None:
    clock = Clock()
    verified = VerifiedTokens(clock=clock)
    token = create_public_token(SECRET, ["read:runs:run_1"], "1m")
    assert verified.principal(SECRET, token).scopes == ("read:runs:run_1",)
    clock.now = claims_of(token)["exp"] + LEEWAY_SECONDS  # the last instant it is still honoured
    assert verified.principal(SECRET, token).scopes == ("read:runs:run_1",)
    clock.now += 1  # PyJWT, on the real clock, would still accept it: the refusal is the cache's own
    with pytest.raises(UnauthorizedError, match="expired"):
        verified.principal(SECRET, token)
    assert len(verified) == 0


def test_a_cached_token_is_verified_anew_under_another_secret_key() -> None:
    verified = VerifiedTokens()
    token = create_public_token(SECRET, ["read:runs"], "1h")
    verified.principal(SECRET, token)
    with pytest.raises(UnauthorizedError, match="Public Access Token is invalid"):
        verified.principal("tr_dev_some_other_secret_0123456789abc", token)


def test_the_cache_keeps_at_most_its_size_dropping_the_least_recently_used() -> None:
    verified = VerifiedTokens(size=3)
    tokens = [create_public_token(SECRET, [f"read:runs:run_{i}"], "1h") for i in range(5)]
    for token in tokens[:3]:
        verified.principal(SECRET, token)
    first = verified.principal(SECRET, tokens[0])  # now the most recently used
    for token in tokens[3:]:
        verified.principal(SECRET, token)
    assert len(verified) == 3
    assert verified.principal(SECRET, tokens[0]) is first  # kept: still the same object
    assert len(verified) == 3


def test_failed_and_overlong_tokens_are_not_kept() -> None:
    verified = VerifiedTokens()
    with pytest.raises(UnauthorizedError):
        verified.principal(SECRET, create_public_token("tr_dev_some_other_secret_0123456789abc", ["read:runs"]))
    long_scope = "read:tags:" + "t" * MAX_CACHED_TOKEN_LENGTH
    assert verified.principal(SECRET, create_public_token(SECRET, [long_scope], "1h")).scopes == (long_scope,)
    assert len(verified) == 0


def test_a_cached_token_grants_only_its_own_scopes() -> None:
    token = create_public_token(SECRET, ["read:runs:run_1"], "1h")
    authenticate(SECRET, token)
    holder = authenticate(SECRET, token)  # from the cache
    assert holder.allows("read", "runs", "run_1") and not holder.allows("read", "runs", "run_2")
