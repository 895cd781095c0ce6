"""`auth`: public access tokens for browsers, signed with the bridge's secret key."""

from __future__ import annotations

from datetime import datetime, timedelta

from bridge.client import state as client
from bridge.runtime import access as tokens

Expiration = str | int | float | timedelta | datetime


def _secret_key() -> str:
    return client.configured().secret_key


def create_public_token(*, scopes: tokens.ScopeSpec, expiration_time: Expiration = tokens.DEFAULT_EXPIRATION) -> str:
    """`create_public_token(scopes={"read": {"runs": [run_id]}}, expiration_time="1h")`."""
    return tokens.create_public_token(_secret_key(), scopes, expiration_time)


def create_trigger_public_token(
    task_id: str, *, expiration_time: Expiration = tokens.DEFAULT_EXPIRATION, multiple_use: bool = False
) -> str:
    """A token that lets a browser trigger `task_id`: once, unless `multiple_use`."""
    return tokens.create_public_token(
        _secret_key(), [f"trigger:tasks:{task_id}"], expiration_time, one_time=not multiple_use
    )
