"""Replays in progress, one per subscriber and channel, whatever the channel's kind: started, stopped, and
reported when they fail."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine

from app.services.coalesce import Busy
from app.services.subscribers import Subscriber

log = logging.getLogger(__name__)

REPLAY_FAILED = "replay failed (the database is unavailable): subscribe again with the same since"
REPLAY_BUSY = (
    "replay refused for now (too many reads are waiting for the database): subscribe again with the same "
    "since after retry_after seconds"
)
# on_failure(subscriber, channel, reason, busy): `busy` when the replay was refused for load (retry_after).
OnFailure = Callable[[Subscriber, str, str, bool], None]


def start_replay(
    subscriber: Subscriber,
    channel: str,
    replay: Coroutine[object, object, None],
    on_failure: OnFailure,
) -> None:
    """Run `replay` as the channel's replay (stopping the one before); `on_failure(subscriber, channel,
    reason, busy)` if it fails."""
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
    on_failure: OnFailure,
) -> None:
    if subscriber.replays.get(channel) is task:
        del subscriber.replays[channel]
    if task.cancelled() or task.exception() is None:
        return
    if isinstance(task.exception(), Busy):
        # A refusal for load (REALTIME_MAX_PENDING_SUBSCRIBES), not a fault: in a reconnect storm thousands
        # come at once, and a traceback each would cost the server what it is short of.
        on_failure(subscriber, channel, REPLAY_BUSY, True)
        return
    log.error("replay_failed channel=%s", channel, exc_info=task.exception())
    on_failure(subscriber, channel, REPLAY_FAILED, False)
