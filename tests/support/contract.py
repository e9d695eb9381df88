"""The protocol contract: docs/asyncapi.yaml, read once, and a check of server frames against it.

The document says which messages the server sends (its `send` operations, and the replies of its `receive`
operations) and which it receives; each message's payload is a JSON Schema (AsyncAPI's Schema Object is
a superset of JSON Schema draft 07). Frames are matched by their `type` to the messages that can carry it,
so a failure names the message it was meant to be and what is wrong with it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


@dataclass(frozen=True)
class Message:
    """One message of the document: its key under components/messages, and its payload's validator."""

    key: str
    definition: dict[str, Any]
    validator: Draft7Validator

    type: str | None  # the `type` its payload must have (every message of this protocol fixes one)

    def errors(self, frame: object) -> list[str]:
        if self.validator.is_valid(frame):
            return []
        error = best_match(self.validator.iter_errors(frame))
        if error is None:
            return []
        where = "/".join(str(part) for part in error.absolute_path) or "the frame"
        return [f"{error.message} (at {where})"]


class Contract:
    """The messages of docs/asyncapi.yaml, split into what the server sends and what it receives."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        # Each payload schema with its references inlined: draft 07 ignores a `$ref`'s siblings, so this
        # is the same schema, and checking a frame resolves nothing (jsonschema is slow at resolving).
        self.messages = {
            key: Message(
                key,
                definition,
                Draft7Validator(inline(document, definition["payload"])),
                resolve(document, definition["payload"]).get("properties", {}).get("type", {}).get("const"),
            )
            for key, definition in document["components"]["messages"].items()
        }
        sent: list[str] = []
        received: list[str] = []
        for operation in document["operations"].values():
            keys = [self._message_key(ref) for ref in operation.get("messages", [])]
            (sent if operation["action"] == "send" else received).extend(keys)
            sent.extend(self._message_key(ref) for ref in operation.get("reply", {}).get("messages", []))
        self.server_messages = [self.messages[k] for k in dict.fromkeys(sent)]
        self.client_messages = [self.messages[k] for k in dict.fromkeys(received)]
        self._by_type: dict[str | None, list[Message]] = {}
        for message in self.server_messages:
            self._by_type.setdefault(message.type, []).append(message)

    def _message_key(self, reference: dict[str, str]) -> str:
        """The components/messages key of an operation's `#/channels/<c>/messages/<m>` reference."""
        target = pointer(self.document, reference["$ref"])
        component = target["$ref"].removeprefix("#/components/messages/")
        assert component in self.document["components"]["messages"], reference
        return str(component)

    def matching_server_messages(self, frame: object) -> list[Message]:
        candidates = self._by_type.get(frame.get("type") if isinstance(frame, dict) else None, [])
        return [m for m in candidates if not m.errors(frame)]

    def check_server_frame(self, frame: object) -> None:
        """Raise AssertionError, saying why, unless the frame is one of the server's messages."""
        kind = frame.get("type") if isinstance(frame, dict) else None
        candidates = self._by_type.get(kind, [])
        reasons: list[str] = []
        for message in candidates:
            errors = message.errors(frame)
            if not errors:
                return
            reasons.extend(f"as {message.key}: {error}" for error in errors)
        if not candidates:
            known = ", ".join(sorted(str(t) for t in self._by_type))
            reasons.append(f"no server message has type {kind!r} (the document's: {known})")
        shown = orjson.dumps(frame).decode()
        if len(shown) > 600:
            shown = shown[:600] + "…"
        raise AssertionError(
            f"a server frame matches no server message of {DOCUMENT.name} (the protocol contract):\n"
            f"  {shown}\n" + "\n".join(f"  - {reason}" for reason in reasons)
        )

    def examples(self, messages: list[Message]) -> Iterator[tuple[Message, str, Any]]:
        """(message, example name, example payload) of every example of these messages."""
        for message in messages:
            for index, example in enumerate(message.definition.get("examples", [])):
                yield message, example.get("name", str(index)), example["payload"]


def resolve(document: dict[str, Any], node: Any) -> Any:
    """Follow a node's local `$ref`s ("#/a/b") to what they name."""
    while isinstance(node, dict) and "$ref" in node:
        node = pointer(document, node["$ref"])
    return node


def inline(document: dict[str, Any], node: Any) -> Any:
    """The node with every local `$ref` in it replaced by what it names (the document has no cycles)."""
    node = resolve(document, node)
    if isinstance(node, dict):
        return {key: inline(document, value) for key, value in node.items()}
    if isinstance(node, list):
        return [inline(document, value) for value in node]
    return node


def pointer(document: dict[str, Any], reference: str) -> Any:
    """What a local reference ("#/a/b") names in the document; KeyError when nothing."""
    target: Any = document
    for part in reference.removeprefix("#/").split("/"):
        target = target[part.replace("~1", "/").replace("~0", "~")]
    return target


@functools.cache
def contract() -> Contract:
    with DOCUMENT.open(encoding="utf-8") as file:
        return Contract(yaml.safe_load(file))


def check_server_frame(frame: object) -> None:
    contract().check_server_frame(frame)
