"""Credential redaction in log lines, including uvicorn's access-log records."""

from __future__ import annotations

import inspect
import io
import logging
import sys

import orjson
import pytest

from app.logs import (
    UVICORN_INVALID_UTF8,
    JsonAccessFormatter,
    JsonFormatter,
    QuietClientMistakes,
    RedactCredentials,
    logging_config,
    redact,
)

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"


def record(msg: str, args: object = ()) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /realtime?token=abc.def.ghi&x=1", "GET /realtime?token=[redacted]&x=1"),
        ("GET /realtime?x=1&token=abc.def.ghi", "GET /realtime?x=1&token=[redacted]"),
        ("GET /realtime?access_token=abc.def.ghi&x=1", "GET /realtime?access_token=[redacted]&x=1"),
        ("/realtime?TOKEN=abc&x=1", "/realtime?TOKEN=[redacted]&x=1"),
        ("/realtime?Access_Token=abc", "/realtime?Access_Token=[redacted]"),
        ("/r?apikey=k1&api_key=k2&jwt=k3", "/r?apikey=[redacted]&api_key=[redacted]&jwt=[redacted]"),
        ('"WebSocket /realtime?token=abc" 403', '"WebSocket /realtime?token=[redacted]" 403'),
        ("/realtime?token=abc def", "/realtime?token=[redacted] def"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", ["GET /realtime?x=1", "tokens are fine", "token: none here", "/r?mytoken=1"])
def test_redact_leaves_other_text_alone(text: str) -> None:
    assert redact(text) == text


def test_filter_keeps_uvicorn_access_args_shape() -> None:
    args = ("127.0.0.1:50000", "GET", f"/realtime?token={TOKEN}&x=1", "1.1", 101)
    rec = record('%s - "%s %s HTTP/%s" %d', args)
    assert RedactCredentials().filter(rec) is True
    assert isinstance(rec.args, tuple) and len(rec.args) == 5
    assert rec.args == ("127.0.0.1:50000", "GET", "/realtime?token=[redacted]&x=1", "1.1", 101)
    assert TOKEN not in rec.getMessage()


def test_filter_redacts_message_and_dict_args() -> None:
    rec = record(f"WebSocket /realtime?token={TOKEN}")
    RedactCredentials().filter(rec)
    assert rec.getMessage() == "WebSocket /realtime?token=[redacted]"

    rec = record("path=%(path)s status=%(status)d", {"path": f"/r?jwt={TOKEN}", "status": 403})
    RedactCredentials().filter(rec)
    assert rec.args == {"path": "/r?jwt=[redacted]", "status": 403}
    assert rec.getMessage() == "path=/r?jwt=[redacted] status=403"


def test_filter_keeps_placeholder_after_credential_key_formattable() -> None:
    # `log.info("connect token=%s", token)`: redacting the format string must not eat the placeholder,
    # or formatting fails and logging's error handler prints the raw arguments, token included.
    rec = record("client connected token=%s user=%s", (TOKEN, "u1"))
    RedactCredentials().filter(rec)
    message = rec.getMessage()
    assert TOKEN not in message
    assert "user=u1" in message


def test_token_logged_as_an_argument_never_reaches_any_output(capsys: pytest.CaptureFixture[str]) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactCredentials())
    logger = logging.getLogger("tests.unit.test_logs.leak")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("ws_connect token=%s", TOKEN)
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue() + capsys.readouterr().err
    assert TOKEN not in written
    assert "ws_connect token=" in stream.getvalue()


def test_logging_config_puts_the_filter_on_every_handler() -> None:
    config = logging_config("DEBUG")
    assert config["filters"]["redact"]["()"] is RedactCredentials
    assert all("redact" in handler["filters"] for handler in config["handlers"].values())
    assert config["loggers"]["app"]["level"] == "DEBUG"


def test_a_clients_invalid_utf8_is_one_info_line_without_a_traceback() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(QuietClientMistakes())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("uvicorn.error")
    saved = logger.handlers, logger.propagate, logger.level
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.INFO
    try:
        try:
            b"\xff".decode()
        except UnicodeDecodeError:
            logger.exception(UVICORN_INVALID_UTF8)  # as uvicorn logs it
        logger.error("another error")
    finally:
        logger.handlers, logger.propagate, logger.level = saved
    lines = stream.getvalue().splitlines()
    assert lines == [
        "INFO websocket_invalid_utf8 closed with 1007 (a text frame was not UTF-8)",
        "ERROR another error",
    ]


def test_uvicorn_still_logs_invalid_utf8_with_the_text_the_filter_matches() -> None:
    from uvicorn.protocols.websockets import websockets_sansio_impl

    assert f'"{UVICORN_INVALID_UTF8}"' in inspect.getsource(websockets_sansio_impl)


def test_logging_config_quiets_client_mistakes_on_the_default_handler() -> None:
    config = logging_config("INFO")
    assert config["filters"]["client_mistakes"]["()"] is QuietClientMistakes
    assert "client_mistakes" in config["handlers"]["default"]["filters"]


def _json_line(formatter: logging.Formatter, rec: logging.LogRecord) -> dict[str, object]:
    RedactCredentials().filter(rec)
    line = formatter.format(rec)
    assert "\n" not in line  # one object per line, tracebacks included
    parsed: dict[str, object] = orjson.loads(line)
    return parsed


def test_json_lines_carry_the_event_and_no_token() -> None:
    rec = logging.LogRecord(
        "app.main", logging.INFO, __file__, 1, "ws_connect token=%s user=%s", (TOKEN, "u"), None
    )
    line = _json_line(JsonFormatter(), rec)
    assert line["level"] == "INFO"
    assert line["logger"] == "app.main"
    assert line["event"] == "ws_connect"
    assert line["message"] == "ws_connect token=[redacted] user=u"
    assert str(line["time"]).endswith("+00:00")
    assert TOKEN not in orjson.dumps(line).decode()


def test_json_tracebacks_are_one_field_and_scrubbed() -> None:
    try:
        raise ValueError(f"bad url /realtime?token={TOKEN}")
    except ValueError:
        rec = logging.LogRecord("app.x", logging.ERROR, __file__, 1, "request_failed", (), sys.exc_info())
    line = _json_line(JsonFormatter(), rec)
    assert "ValueError" in str(line["exception"])
    assert "token=[redacted]" in str(line["exception"])
    assert TOKEN not in orjson.dumps(line).decode()
    # A message that does not start with an event name has none.
    rec = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, "Started server process [1]", (), None
    )
    assert "event" not in _json_line(JsonFormatter(), rec)


def test_json_access_lines_have_the_request_as_fields_with_the_path_scrubbed() -> None:
    args = ("127.0.0.1:50000", "GET", f"/realtime?token={TOKEN}&x=1", "1.1", 101)
    line = _json_line(JsonAccessFormatter(), record('%s - "%s %s HTTP/%s" %d', args))
    assert line["path"] == "/realtime?token=[redacted]&x=1"
    assert (line["client"], line["method"], line["status"]) == ("127.0.0.1:50000", "GET", 101)
    assert TOKEN not in orjson.dumps(line).decode()


def test_logging_config_json_keeps_every_filter() -> None:
    config = logging_config("INFO", "json")
    assert config["formatters"]["default"]["()"] is JsonFormatter
    assert config["formatters"]["access"]["()"] is JsonAccessFormatter
    assert all("redact" in handler["filters"] for handler in config["handlers"].values())
    assert "client_mistakes" in config["handlers"]["default"]["filters"]
