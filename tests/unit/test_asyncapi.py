"""docs/asyncapi.yaml: a valid AsyncAPI 3.0 document whose references resolve, whose examples are what the
server sends and accepts, whose error codes are exactly those the code sends, and whose server messages
match the frames the encoders build. (The integration suite checks every frame it reads against it too:
tests/support/client.py.)"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft7Validator

from app import protocol
from app.protocol import BroadcastChannel, BroadcastEncoder, TableChannel
from tests.support.contract import DOCUMENT, Contract, contract, pointer

ROOT = DOCUMENT.parents[1]
# The AsyncAPI Initiative's JSON Schema of AsyncAPI documents, from its npm package (tests/contract/).
SPECS = ROOT / "tests" / "contract"
ASYNCAPI_3_SCHEMA = SPECS / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0-without-$id.json"
# The HTTP API's errors (JSON bodies with codes of their own) are in the OpenAPI document, not here.
HTTP_MODULES = {"app/routers/broadcast.py", "app/errors.py"}


@pytest.fixture(scope="module")
def asyncapi_3_schema() -> dict[str, Any]:
    if not ASYNCAPI_3_SCHEMA.is_file():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install the AsyncAPI JSON Schema (tests/contract/package.json)"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=SPECS, check=True, timeout=300
        )
    schema: dict[str, Any] = json.loads(ASYNCAPI_3_SCHEMA.read_text(encoding="utf-8"))
    return schema


@pytest.fixture(scope="module")
def spec() -> Contract:
    return contract()


def references(node: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    """(where, target) of every `$ref` in the document."""
    if isinstance(node, dict):
        if "$ref" in node:
            yield where, node["$ref"]
        for key, value in node.items():
            yield from references(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from references(value, f"{where}/{index}")


# --- the document --------------------------------------------------------------------------------------


def test_the_document_is_a_valid_asyncapi_3_document(
    spec: Contract, asyncapi_3_schema: dict[str, Any]
) -> None:
    document = spec.document
    assert document["asyncapi"] == "3.0.0"
    problems = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message[:300]}"
        for error in Draft7Validator(asyncapi_3_schema).iter_errors(document)
    ]
    assert not problems, "\n".join(problems)


def test_the_asyncapi_schema_catches_a_broken_document(
    spec: Contract, asyncapi_3_schema: dict[str, Any]
) -> None:
    """The check above can fail: a document without `info`, or with an AsyncAPI 2 action, is refused."""
    validator = Draft7Validator(asyncapi_3_schema)
    without_info = {key: value for key, value in spec.document.items() if key != "info"}
    assert not validator.is_valid(without_info)
    operations = {**spec.document["operations"], "sendHeartbeat": {"action": "publish"}}
    assert not validator.is_valid({**spec.document, "operations": operations})


def test_every_reference_names_something_in_the_document(spec: Contract) -> None:
    document = spec.document
    dangling = []
    for where, target in references(document):
        try:
            pointer(document, target)
        except (KeyError, IndexError, TypeError):
            dangling.append(f"{where} -> {target}")
    assert not dangling, dangling


def test_channels_and_operations_reference_existing_components(spec: Contract) -> None:
    """Channels' messages are component messages; each operation's messages (and reply's) are messages
    of its channel, as AsyncAPI 3 requires; every component message and schema is used."""
    document = spec.document
    components = document["components"]
    used_messages = set()
    for name, channel in document["channels"].items():
        for key, message in channel["messages"].items():
            target = message["$ref"]
            assert target.startswith("#/components/messages/"), (name, key)
            used_messages.add(target.removeprefix("#/components/messages/"))
        for server in channel.get("servers", []):
            pointer(document, server["$ref"])
    sent_or_received = set()
    for name, operation in document["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        channel = operation["channel"]["$ref"]
        assert channel.startswith("#/channels/"), name
        for part in [operation, operation.get("reply", {})]:
            for message in part.get("messages", []):
                reply_channel = part.get("channel", operation["channel"])["$ref"]
                assert message["$ref"].startswith(f"{reply_channel}/messages/"), (name, message)
                sent_or_received.add(message["$ref"])
    assert used_messages == set(components["messages"]), "component messages no channel carries"
    every_channel_message = {
        f"#/channels/{name}/messages/{key}"
        for name, channel in document["channels"].items()
        for key in channel["messages"]
    }
    assert sent_or_received == every_channel_message, "channel messages no operation sends or receives"
    used_schemas = {t.removeprefix("#/components/schemas/") for _, t in references(document)}
    assert set(components["schemas"]) <= used_schemas, set(components["schemas"]) - used_schemas


def test_every_message_has_an_example_and_every_example_validates(spec: Contract) -> None:
    for message in spec.messages.values():
        assert message.definition.get("examples"), f"{message.key} has no example"
    for message, name, example in spec.examples(spec.client_messages):
        assert not message.errors(example), (message.key, name, message.errors(example))
    for message, name, example in spec.examples(spec.server_messages):
        # Exactly its own message: a frame is never ambiguous.
        matches = [m.key for m in spec.matching_server_messages(example)]
        assert matches == [message.key], (message.key, name, matches, message.errors(example))


def test_every_client_example_is_accepted_by_the_server(spec: Contract) -> None:
    for message, name, example in spec.examples(spec.client_messages):
        request = protocol.parse_request(orjson.dumps(example).decode())
        assert request.ref == example.get("ref"), (message.key, name)


def _sent_codes(path: Path) -> Iterator[str]:
    """Error codes given as literals to encode_error/ProtocolError (code=) or to a module's `_error`
    helper (its third argument), which is how app/ writes every code it sends."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        values: list[ast.expr] = []
        if name in ("encode_error", "ProtocolError", "_error"):
            values += [k.value for k in node.keywords if k.arg == "code"]
        if name == "_error" and len(node.args) >= 3:
            values.append(node.args[2])
        for value in values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                yield value.value


def test_the_error_codes_are_exactly_those_the_server_sends(spec: Contract) -> None:
    documented = set(pointer(spec.document, "#/components/schemas/ErrorCode")["enum"])
    sent = {
        code
        for path in (ROOT / "app").rglob("*.py")
        if str(path.relative_to(ROOT)) not in HTTP_MODULES
        for code in _sent_codes(path)
    }
    assert sent, "found no error code in app/: the scan is broken"
    assert sent - documented == set(), "codes the server sends that docs/asyncapi.yaml does not document"
    assert documented - sent == set(), "codes docs/asyncapi.yaml documents that the server never sends"


# --- the encoders' frames are the document's server messages -----------------------------------------


def frame(text: str) -> Any:
    return orjson.loads(text)


def test_the_encoders_frames_match_the_document(spec: Contract) -> None:
    table = TableChannel("public", "products")
    encoder = BroadcastEncoder(table)
    row, old = '{"id": 1, "name": "Widget"}', '{"id": 1, "name": "Gadget"}'
    frames = [
        protocol.HEARTBEAT,
        protocol.encode_ack(table.name),
        protocol.encode_ack("broadcast:room1", "s1"),
        protocol.encode_reply("t1"),
        protocol.encode_reply(),
        protocol.encode_error("malformed JSON"),
        protocol.encode_error("table public.nope does not exist", ref=7, channel="table:public.nope"),
        protocol.encode_error("the token has expired", code="token_expired"),
        protocol.encode_error("gone", channel=table.name, code="replay_gap"),
        encoder.encode(42, "INSERT", row, None),
        encoder.encode(43, "UPDATE", row, old),
        encoder.encode(44, "DELETE", None, old),
        protocol.encode_message("broadcast:room1", "cursor", '{"x": 1}'),
        protocol.encode_message("broadcast:room1", "refresh", "null", 57),
        protocol.encode_presence_state("broadcast:room1", {"u": [("9c1e02a7d4f0b3e1", '{"name": "Ann"}')]}),
        protocol.encode_presence_diff("broadcast:room1", {}, {"u": [("9c1e02a7d4f0b3e1", "{}")]}, {}),
    ]
    for text in frames:
        spec.check_server_frame(frame(text))


refs = st.none() | st.text(max_size=128) | st.integers(min_value=-(2**63), max_value=2**63)
# A broadcast channel's name: what parse_broadcast_topic accepts (no control characters).
topics = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=50)
codes = st.none() | st.sampled_from(["subscribe_failed", "forbidden"])


@settings(max_examples=60, deadline=None)
@given(ref=refs, topic=topics, code=codes)
def test_acks_and_errors_match_the_document_whatever_their_ref_and_channel(
    ref: str | int | None, topic: str, code: str | None
) -> None:
    name = BroadcastChannel(topic).name
    contract().check_server_frame(frame(protocol.encode_ack(name, ref)))
    contract().check_server_frame(frame(protocol.encode_reply(ref)))
    contract().check_server_frame(frame(protocol.encode_error("no", ref=ref, channel=name, code=code)))


# --- the check fails when it must -------------------------------------------------------------------------

INSERT = {
    "type": "broadcast",
    "channel": "table:public.products",
    "id": 42,
    "payload": {"type": "INSERT", "table": "products", "schema": "public", "record": {"id": 1}},
}


@pytest.mark.parametrize(
    ("drifted", "says"),
    [
        ({**INSERT, "extra": 1}, "'extra' was unexpected"),
        ({**INSERT, "id": "42"}, "at id"),
        ({**INSERT, "payload": {**INSERT["payload"], "type": "TRUNCATE"}}, "at payload"),
        ({**INSERT, "payload": {"type": "UPDATE", "table": "p", "schema": "s", "record": {}}}, "at payload"),
        ({"type": "heartbeat", "at": 1}, "'at' was unexpected"),
        ({"type": "ack", "channel": "room1"}, "at channel"),
        ({"type": "error", "error": "x", "code": "no_such_code"}, "'no_such_code' is not one of"),
        ({"type": "error", "error": "expired", "code": "token_expired", "ref": "r1"}, "should not be valid"),
        ({"type": "error", "code": "forbidden", "channel": "broadcast:r"}, "'error' is a required property"),
        ({"type": "presence_diff", "channel": "broadcast:r", "joins": {}, "leaves": {}}, "'updates'"),
        ({"type": "welcome"}, "no server message has type 'welcome'"),
    ],
)
def test_a_frame_the_document_does_not_describe_fails_with_a_readable_message(
    spec: Contract, drifted: dict[str, Any], says: str
) -> None:
    with pytest.raises(AssertionError) as caught:
        spec.check_server_frame(drifted)
    text = str(caught.value)
    assert "matches no server message of asyncapi.yaml" in text, text
    assert orjson.dumps(drifted).decode()[:60] in text, text
    assert says in text, text
