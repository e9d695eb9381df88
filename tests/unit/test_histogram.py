"""The lock-free histogram behind /metrics' latency figures, and how frames are counted by type."""

from __future__ import annotations

from app import protocol
from app.services.histogram import Histogram
from app.services.hub import frame_type


def test_a_value_on_a_bound_counts_in_that_bucket_and_buckets_are_cumulative() -> None:
    histogram = Histogram((0.001, 0.01, 0.1))
    histogram.observe(0.001)  # equal to a bound: `le` means at or below it
    histogram.observe(0.005, times=3)  # a batch of three changes that waited as long
    histogram.observe(7.0)  # above every bound
    assert histogram.cumulative() == [("0.001", 1), ("0.01", 4), ("0.1", 4), ("+Inf", 5)]
    assert histogram.count == 5
    assert abs(histogram.sum - (0.001 + 0.015 + 7.0)) < 1e-12


def test_frames_are_counted_by_their_type() -> None:
    assert frame_type(protocol.encode_ack("table:public.t", "r1")) == "ack"
    assert frame_type(protocol.encode_reply()) == "ack"
    assert frame_type(protocol.encode_error("nope", code="rate_limited")) == "error"
    assert frame_type(protocol.HEARTBEAT) == "heartbeat"
    assert frame_type('{"type":"broadcast","channel":"table:public.t","id":1}') == "broadcast"
    assert frame_type("[]") == frame_type('{"type":""}') == "other"
