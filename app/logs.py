"""Logging setup: one event per line, and no token ever written, uvicorn's own lines included."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]

# Query-string credentials, as uvicorn logs them in "WebSocket /realtime?token=..." and access lines.
_CREDENTIAL = re.compile(r"(?i)\b((?:access_)?token|apikey|api_key|jwt)=[^&\s\"']*")


def redact(text: str) -> str:
    return _CREDENTIAL.sub(r"\1=[redacted]", text)


class RedactCredentials(logging.Filter):
    """Removes credentials from log records.

    String arguments are redacted in place, which keeps their shape (uvicorn's access formatter unpacks
    them positionally). If the formatted message still holds a credential (a format string such as
    "token=%s" with the raw token as argument), the record is replaced by its redacted text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A malformed record: logging would print its raw arguments in the error report.
            record.msg, record.args = "unformattable log record (arguments withheld)", None
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


# What uvicorn's WebSocket protocol logs, with a traceback at ERROR, when a client sends a text frame that
# is not UTF-8 (it then closes with 1007): any client can cause it, once per connection.
UVICORN_INVALID_UTF8 = "Invalid UTF-8 sequence received from client."


class QuietClientMistakes(logging.Filter):
    """Turns uvicorn's report of a client's invalid UTF-8 into one INFO line without a traceback: a
    misbehaving client is not a server error, and must not be able to flood the log with tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.error" and record.msg == UVICORN_INVALID_UTF8:
            record.msg, record.args = (
                "websocket_invalid_utf8 closed with 1007 (a text frame was not UTF-8)",
                None,
            )
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


# The event name that starts every message of ours: `service_started head_id=3`.
_EVENT = re.compile(r"[a-z][a-z0-9_]*(?=\s|$)")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, event (the message's first word,
    when it is an event name), message, and the traceback if any. The redaction filter has already run on
    the message; the traceback, which no filter sees, is redacted here."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        message = record.getMessage()
        event = _EVENT.match(message)
        if event:
            entry["event"] = event.group()
        entry["message"] = message
        entry.update(self.fields(record))
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        return orjson.dumps(entry).decode()

    def fields(self, record: logging.LogRecord) -> dict[str, object]:
        """Extra keys of a kind of record."""
        return {}


class JsonAccessFormatter(JsonFormatter):
    """uvicorn's access lines, with the request's parts as fields (its arguments: client address, method,
    path with query, HTTP version, status; the path's credentials are redacted by the filter)."""

    def fields(self, record: logging.LogRecord) -> dict[str, object]:
        if not isinstance(record.args, tuple) or len(record.args) != 5:
            return {}
        client, method, path, http_version, status = record.args
        return {
            "client": client,
            "method": method,
            "path": path,
            "http_version": http_version,
            "status": status,
        }


def logging_config(level: str, log_format: LogFormat = "text") -> dict[str, Any]:
    """A dictConfig for uvicorn and the app; every handler carries the redaction filter. `text`: one
    `key=value` line per event; `json`: one JSON object per line."""
    upper = level.upper()
    formatters: dict[str, Any] = {
        "default": {"format": "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"},
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(asctime)s level=%(levelname)s logger=%(name)s %(client_addr)s "%(request_line)s" '
            "%(status_code)s",
            "use_colors": False,
        },
    }
    if log_format == "json":
        formatters = {"default": {"()": JsonFormatter}, "access": {"()": JsonAccessFormatter}}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactCredentials}, "client_mistakes": {"()": QuietClientMistakes}},
        "formatters": formatters,
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["client_mistakes", "redact"],
            },
            "access": {"class": "logging.StreamHandler", "formatter": "access", "filters": ["redact"]},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"handlers": ["access"], "level": upper, "propagate": False},
            "app": {"handlers": ["default"], "level": upper, "propagate": False},
        },
        "root": {"handlers": ["default"], "level": "WARNING"},
    }
