"""Where a subscription resumes, and which changes it has already delivered (pure).

The client keeps, per subscription, the id of the last change it handed to the application. After any
disconnect it subscribes again with `since` = that id, and drops every frame whose id is not above it, so
that the application sees each change once, in order, whatever the connection did.
"""

from __future__ import annotations


class ResumePoint:
    """`floor`: frames with an id at or below it were delivered (or predate the subscription): dropped.
    `since`: what the next subscribe sends (None: from now)."""

    __slots__ = ("floor", "since")

    def __init__(self, since: int | None = None) -> None:
        if since is not None and since < 0:
            raise ValueError("since must be a non-negative change id")
        self.floor = since
        self.since = since

    def acked(self, start: int | None) -> None:
        """The server acked a subscribe; `start` is the id it says the subscription starts after (when it
        says so). A subscription that had no position yet takes it, so that a disconnect before its first
        change still resumes from where it began."""
        if self.since is None and start is not None:
            self.since = start
            if self.floor is None:
                self.floor = start

    def accept(self, change_id: int) -> bool:
        """Whether a change with this id is new to the application (and if so, it is now delivered)."""
        if self.floor is not None and change_id <= self.floor:
            return False
        self.floor = self.since = change_id
        return True

    def gap(self) -> None:
        """The server reported a replay gap: what follows is numbered from wherever the server could start,
        possibly below `since` (a restored database), so nothing is dropped until the next change sets
        the floor again. `since` stays: resuming before that change reports the gap again (the
        application reloads once more) rather than skipping what it has not seen."""
        self.floor = None
