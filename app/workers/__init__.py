"""Several worker processes on one port (REALTIME_WORKERS > 1).

`supervisor` is the parent: it starts the workers, restarts one that dies, and stops them all.
`process` is a worker: its own application on a port shared with SO_REUSEPORT, plus a private unix socket.
`siblings` is how one worker reaches the others; `figures` folds their stats and metrics into the instance's.
"""


class WorkersError(Exception):
    """The workers cannot be run as asked; the message says what to do."""
