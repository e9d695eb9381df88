"""What a refusal asks the client to wait (pure): Retry-After's two forms, garbage, the past, the huge;
and the `retry_after` of an error frame."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from hypothesis import given
from hypothesis import strategies as st

from fluxbase_realtime_client import parse_server_message
from fluxbase_realtime_client.retry_after import (
    MAX_RETRY_AFTER,
    frame_retry_after,
    parse_retry_after,
    wait,
)

NOW = datetime(2026, 12, 7, 14, 0, 0, tzinfo=UTC)


def test_delay_seconds() -> None:
    assert parse_retry_after("1", NOW) == 1.0
    assert parse_retry_after(" 30 ", NOW) == 30.0
    assert parse_retry_after("0", NOW) == 0.0


def test_an_http_date_counts_from_now() -> None:
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=12), usegmt=True), NOW) == 12.0
    assert parse_retry_after("Mon, 07 Dec 2026 14:00:05 GMT", NOW) == 5.0
    assert parse_retry_after("Mon, 07 Dec 2026 14:00:05 -0000", NOW) == 5.0  # a naive date is UTC
    assert parse_retry_after("Mon, 07 Dec 2026 15:00:05 +0100", NOW) == 5.0


def test_a_date_in_the_past_is_no_wait() -> None:
    assert parse_retry_after("Mon, 07 Dec 2026 13:59:00 GMT", NOW) == 0.0


def test_garbage_and_negative_values_are_no_hint() -> None:
    for value in [None, "", "soon", "-5", "1.5", "1e3", "0x10", "²", "Mon, 99 Foo 2026", "12 apples"]:
        assert parse_retry_after(value, NOW) is None, value


def test_huge_values_are_capped() -> None:
    assert parse_retry_after("3600", NOW) == MAX_RETRY_AFTER
    assert parse_retry_after("9" * 5000, NOW) == MAX_RETRY_AFTER
    assert parse_retry_after("Fri, 01 Jan 9999 00:00:00 GMT", NOW) == MAX_RETRY_AFTER


@given(st.text())
def test_any_header_value_is_no_hint_or_a_wait_within_the_cap(value: str) -> None:
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER


def test_a_frames_retry_after_is_a_number_of_seconds_or_nothing() -> None:
    assert frame_retry_after(1) == 1.0
    assert frame_retry_after(0.25) == 0.25
    assert frame_retry_after(10**9) == MAX_RETRY_AFTER
    assert frame_retry_after(10**400) == MAX_RETRY_AFTER
    assert frame_retry_after(math.inf) == MAX_RETRY_AFTER
    for garbage in [None, -1, -math.inf, "1", True, math.nan, [1], {"s": 1}]:
        assert frame_retry_after(garbage) is None, garbage


def test_the_error_frame_carries_it() -> None:
    refused = parse_server_message(
        '{"type":"error","code":"subscribe_failed","channel":"table:public.t","ref":"c1",'
        '"retry_after":3,"error":"too many subscribes are waiting"}'
    )
    assert getattr(refused, "retry_after", None) == 3.0
    garbled = parse_server_message('{"type":"error","error":"x","retry_after":"soon"}')
    assert getattr(garbled, "retry_after", "missing") is None


def test_the_wait_is_the_hint_plus_the_jitter() -> None:
    assert wait(None, 0.3) == 0.3
    assert wait(2.0, 0.3) == 2.3
