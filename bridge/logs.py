"""How the bridge's processes log (docs/observability.md): `BRIDGE_LOG_LEVEL`, `BRIDGE_LOG_FORMAT` and
`BRIDGE_ACCESS_LOG`, applied once by the entry point to the bridge's loggers and uvicorn's.

`json` writes one object per line: `ts`, `level`, `logger`, `message`, the record's extra fields, and
`exc` with a traceback. Other libraries log their warnings and errors through the same handler.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from bridge.config import ConfigError

LEVELS = ("debug", "info", "warning", "error", "critical")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# At debug, uvicorn's WebSocket layer logs the frames it sends (runs' data, cut short): its loggers stop at info.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
# uvicorn's line per accepted (or refused) WebSocket, on its error logger: the WebSocket's access log line.
WEBSOCKET_ACCESS_LINE = '%s - "WebSocket %s"'
# A wait token's callback URL completes the token: its signature is a credential, kept out of access logs.
CALLBACK_SIGNATURE = re.compile(r"(/callback/)[^/?#\s\"]+")
# What every LogRecord has (and uvicorn's ANSI-coloured copy of its message); anything else on a record
# was passed as `extra=` and goes into the JSON object.
_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((key, value) for key, value in record.__dict__.items() if key not in _RECORD_FIELDS)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class RedactCallbackSignatures(logging.Filter):
    """Rewrites an access log line's path so a wait token's callback signature does not reach the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = CALLBACK_SIGNATURE.sub(r"\1<redacted>", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class DropWebSocketAccessLines(logging.Filter):
    """Without the access log, uvicorn's line per WebSocket handshake goes too (its other lines stay)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(WEBSOCKET_ACCESS_LINE))


def access_log_enabled() -> bool:
    """`BRIDGE_ACCESS_LOG=1` (or true, yes, on): a line per HTTP request and per WebSocket handshake. Off by
    default: at thousands of connects or long-polls a second, writing them costs more than serving some."""
    return os.environ.get("BRIDGE_ACCESS_LOG", "").strip().lower() in ("1", "true", "yes", "on")


def log_settings(level: str | None = None, log_format: str | None = None) -> tuple[str, str]:
    """The level and format: as given, else `BRIDGE_LOG_LEVEL` / `BRIDGE_LOG_FORMAT`, else info and text.
    ConfigError names the setting when one is not a known value."""
    level = (level or os.environ.get("BRIDGE_LOG_LEVEL") or "info").lower()
    log_format = (log_format or os.environ.get("BRIDGE_LOG_FORMAT") or "text").lower()
    if level not in LEVELS:
        raise ConfigError(f"BRIDGE_LOG_LEVEL / --log-level is one of {', '.join(LEVELS)}, not {level!r}")
    if log_format not in FORMATS:
        raise ConfigError(f"BRIDGE_LOG_FORMAT / --log-format is one of {', '.join(FORMATS)}, not {log_format!r}")
    return level, log_format


def configure_logging(
    level: str, log_format: str, stream: TextIO | None = None, access_log: bool | None = None
) -> None:
    """One handler on the root logger (stderr unless `stream`), in `log_format`; the bridge's loggers at `level`,
    uvicorn's at `level` but never below info, everything else at warning; uvicorn's access lines only with
    `access_log` (default: `access_log_enabled()`). Uvicorn must then be started with `log_config=None`, or it
    sets up handlers of its own."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    numeric = logging.getLevelName(level.upper())
    logging.getLogger("bridge").setLevel(numeric)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(numeric, logging.INFO))
        logger.handlers.clear()  # whatever a dictConfig (uvicorn's own) left: they log through the root's handler
        logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactCallbackSignatures) for f in access.filters):
        access.addFilter(RedactCallbackSignatures())
    errors = logging.getLogger("uvicorn.error")
    errors.filters = [f for f in errors.filters if not isinstance(f, DropWebSocketAccessLines)]
    if not (access_log_enabled() if access_log is None else access_log):
        access.setLevel(logging.WARNING)  # uvicorn logs requests at info: they stop at the level check
        errors.addFilter(DropWebSocketAccessLines())
