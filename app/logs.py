"""Logging setup: one event per line, and no token ever written, uvicorn's own lines included."""

from __future__ import annotations

import logging
import re
from typing import Any

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


def logging_config(level: str) -> dict[str, Any]:
    """A dictConfig for uvicorn and the app; every handler carries the redaction filter."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactCredentials}, "client_mistakes": {"()": QuietClientMistakes}},
        "formatters": {
            "default": {"format": "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"},
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(asctime)s level=%(levelname)s logger=%(name)s %(client_addr)s "%(request_line)s" '
                "%(status_code)s",
                "use_colors": False,
            },
        },
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
