"""Views and table subscribe options, without sockets: what a change looks like through a view."""

from __future__ import annotations

import orjson
import pytest

from app import protocol
from app.protocol import ProtocolError
from app.services.change_frames import ChangeFramer
from app.services.views import (
    PLAIN,
    RowAccess,
    View,
    ViewFrames,
    channel_of,
    subscription_key,
    with_subscription,
)

FRAMER = ChangeFramer()
ALL = RowAccess(None, ("id",))
ROW = '{"id": 1, "name": "a", "price": 5}'
NEW = '{"id": 1, "name": "a", "price": 50}'


def payload(frame: str | None) -> dict[str, object] | None:
    return None if frame is None else orjson.loads(frame)["payload"]


@pytest.mark.parametrize(
    ("new_visible", "old_visible", "op", "record", "old_record"),
    [
        (True, True, "UPDATE", {"id": 1, "name": "a", "price": 50}, {"id": 1, "name": "a", "price": 5}),
        (True, False, "INSERT", {"id": 1, "name": "a", "price": 50}, None),
        (False, True, "DELETE", None, {"id": 1, "name": "a", "price": 5}),
        (False, False, None, None, None),
    ],
)
def test_an_update_through_a_view(
    new_visible: bool, old_visible: bool, op: str | None, record: object, old_record: object
) -> None:
    change = FRAMER.change(7, "public", "t", "UPDATE", NEW, ROW, False)
    frame = ViewFrames(FRAMER).frame(
        change,
        View(filter_key="k"),
        ALL,
        new_visible=new_visible,
        old_visible=old_visible,
        rls_hides_new=False,
    )
    if op is None:
        assert frame is None
        return
    got = payload(frame)
    assert got is not None and got["type"] == op
    assert got.get("record") == record and got.get("old_record") == old_record


def test_leaving_row_level_security_names_only_the_key() -> None:
    change = FRAMER.change(7, "public", "t", "UPDATE", NEW, ROW, True)
    frame = ViewFrames(FRAMER).frame(
        change, PLAIN, ALL, new_visible=False, old_visible=True, rls_hides_new=True
    )
    assert payload(frame) == {"type": "DELETE", "table": "t", "schema": "public", "old_record": {"id": 1}}


def test_events_columns_and_subscription() -> None:
    change = FRAMER.change(7, "public", "t", "INSERT", NEW, None, False)
    frames = ViewFrames(FRAMER)
    view = View(events=frozenset({"INSERT"}), columns=frozenset({"id", "price"}), subscription="s")
    frame = frames.frame(change, view, ALL, new_visible=True, old_visible=False, rls_hides_new=False)
    assert frame is not None and orjson.loads(frame)["subscription"] == "s"
    assert payload(frame) == {
        "type": "INSERT",
        "table": "t",
        "schema": "public",
        "record": {"id": 1, "price": 50},
    }
    # Built once for every group that sees the change alike.
    again = frames.frame(change, view, ALL, new_visible=True, old_visible=False, rls_hides_new=False)
    assert again is frame
    deletes_only = View(events=frozenset({"DELETE"}))
    assert (
        frames.frame(change, deletes_only, ALL, new_visible=True, old_visible=False, rls_hides_new=False)
        is None
    )
    plain = frames.frame(change, PLAIN, ALL, new_visible=True, old_visible=False, rls_hides_new=False)
    assert plain is change.frame  # the shared frame, not a copy


def test_subscription_keys() -> None:
    assert subscription_key("table:public.t", None) == "table:public.t"
    key = subscription_key("table:public.t", "list")
    assert key != "table:public.t" and channel_of(key) == "table:public.t"
    assert orjson.loads(with_subscription('{"type":"broadcast","id":1}', 'a"b')) == {
        "type": "broadcast",
        "subscription": 'a"b',
        "id": 1,
    }


def test_views_with_the_same_options_are_one_group() -> None:
    assert View(filter_key="k", subscription="s") == View(filter_key="k", subscription="s")
    assert View(filter_key="k") != View(filter_key="k", subscription="s")
    assert PLAIN.plain and not View(subscription="s").plain


def request(**fields: object) -> protocol.ChannelRequest:
    parsed = protocol.parse_request(
        orjson.dumps({"type": "subscribe", "channel": "table:public.t", **fields}).decode()
    )
    assert isinstance(parsed, protocol.ChannelRequest)
    return parsed


def test_table_options_are_parsed() -> None:
    options = request(
        filter="a=eq.1", events=["insert", "UPDATE"], columns=["b", "b", "c"], subscription="s"
    ).options
    assert options == protocol.TableOptions("a=eq.1", frozenset({"INSERT", "UPDATE"}), ("b", "c"), "s")
    assert request().options == protocol.NO_OPTIONS


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"filter": 1}, "filter must be a string"),
        ({"events": "INSERT"}, "events must be a list of INSERT, UPDATE, DELETE, TRUNCATE"),
        ({"events": ["TRUNCATE!"]}, "'TRUNCATE!' is not one of them"),
        ({"columns": []}, "columns must be a non-empty list"),
        ({"columns": ["a\x00"]}, "a column name contains a control character"),
        ({"subscription": 5}, "subscription must be a string"),
        ({"subscription": "x" * 129}, "subscription is longer than 128 bytes"),
    ],
)
def test_table_option_refusals(fields: dict[str, object], error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        request(ref="r", **fields)
