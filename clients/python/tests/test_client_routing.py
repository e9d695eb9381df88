"""Which stream a frame goes to (pure: streams are registered, no connection is made)."""

from __future__ import annotations

import pytest

from fluxbase_realtime_client import RealtimeClient


async def test_frames_go_to_the_stream_of_their_subscription_id() -> None:
    client = RealtimeClient("ws://127.0.0.1:9/realtime")
    try:
        plain = client.changes("table:public.orders")
        listed = client.changes("table:public.orders", filter="status=eq.paid", subscription="list")
        detail = client.changes("table:public.orders", filter="id=eq.1", subscription="detail")
        other = client.changes("table:public.users")
        assert client.streams_for("table:public.orders", "list") == [listed]
        assert client.streams_for("table:public.orders", "detail") == [detail]
        assert client.streams_for("table:public.orders", None) == [plain]  # no id: the plain one only
        assert client.streams_for("table:public.orders", "gone") == []
        assert client.streams_for("table:public.users", None) == [other]
        assert client.streams_for(None, None) == []
        await plain.close()
        # A server that echoes no ids serves every stream of the channel with one subscription.
        assert client.streams_for("table:public.orders", None) == [listed, detail]
    finally:
        await client.close()


async def test_one_channel_twice_needs_distinct_subscription_ids() -> None:
    client = RealtimeClient("ws://127.0.0.1:9/realtime")
    try:
        client.changes("table:public.orders")
        with pytest.raises(ValueError, match="subscription"):
            client.changes("table:public.orders")
        client.changes("table:public.orders", subscription="second")
    finally:
        await client.close()
