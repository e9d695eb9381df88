"""Replays in progress, one per subscriber and channel, whatever the channel's kind: started, stopped, and
reported when they fail."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine

from app.services.subscribers import Subscriber

log = logging.getLogger(__name__)

REPLAY_FAILED = "replay failed (the database is unavailable): subscribe again with the same since"


def start_replay(
    subscriber: Subscriber,
    channel: str,
    replay: Coroutine[object, object, None],
    on_failure: Callable[[Subscriber, str, str], None],
) -> None:
    """Run `replay` as the channel's replay (stopping the one before); `on_failure(subscriber, channel,
    reason)` if it fails."""
    stop_replay(subscriber, channel)
    task = asyncio.create_task(replay)
    subscriber.replays[channel] = task
    task.add_done_callback(
        functools.partial(_ended, subscriber=subscriber, channel=channel, on_failure=on_failure)
    )


def stop_replay(subscriber: Subscriber, channel: str) -> None:
    replay = subscriber.replays.pop(channel, None)
    if replay is not None:
        replay.cancel()


def _ended(
    task: asyncio.Task[None],
    subscriber: Subscriber,
    channel: str,
    on_failure: Callable[[Subscriber, str, str], None],
) -> None:
    if subscriber.replays.get(channel) is task:
        del subscriber.replays[channel]
    if task.cancelled() or task.exception() is None:
        return
    log.error("replay_failed channel=%s", channel, exc_info=task.exception())
    on_failure(subscriber, channel, REPLAY_FAILED)
