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
    """Rewrites credentials in a record's message and string arguments, keeping the arguments' shape
    (uvicorn's access formatter unpacks them positionally)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def logging_config(level: str) -> dict[str, Any]:
    """A dictConfig for uvicorn and the app; every handler carries the redaction filter."""
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactCredentials}},
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
            "default": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["redact"]},
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
