"""A worker's view of the other workers of its instance, reached over their private unix sockets.

A scrape of /metrics or a GET of the stats lands on whichever worker the kernel picks, so that worker answers
for the whole instance: it asks each sibling for its own figures over the sibling's unix socket (in the
supervisor's run directory, mode 0700), with the run's secret in a header. A request carrying the secret is
answered with the worker's own figures only, so a sibling's request never fans out again; callers from
outside never have the secret, and their requests are authorized exactly as before.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)

SIBLING_HEADER = "x-fluxbase-worker"


@dataclass(frozen=True, slots=True)
class WorkerPlace:
    """Where one worker stands in its run: its index among `count`, the run's directory and secret."""

    index: int
    count: int
    run_dir: str
    secret: str

    def socket_path(self, index: int) -> str:
        return os.path.join(self.run_dir, f"worker-{index}.sock")


class Siblings:
    """The other workers' own figures, each asked with a bound on the whole request."""

    def __init__(self, place: WorkerPlace, timeout: float) -> None:
        self.place = place
        self._timeout = timeout
        self._clients = {
            index: httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=place.socket_path(index)),
                base_url="http://worker",
                headers={SIBLING_HEADER: place.secret},
                timeout=timeout,
            )
            for index in range(place.count)
            if index != place.index
        }

    @property
    def index(self) -> int:
        return self.place.index

    @property
    def count(self) -> int:
        return self.place.count

    def asked_by_sibling(self, headers: Mapping[str, str]) -> bool:
        """True when the request carries the run's secret: answer with this worker's own figures only."""
        given = headers.get(SIBLING_HEADER)
        # Header values arrive decoded as latin-1; compared in constant time, as any secret.
        return given is not None and hmac.compare_digest(given.encode("latin-1"), self.place.secret.encode())

    async def fetch(self, path: str) -> dict[int, httpx.Response | None]:
        """Each sibling's 200 response to GET `path`, or None for one that did not give it in time."""
        indexes = sorted(self._clients)
        answers = await asyncio.gather(*(self._get(index, path) for index in indexes))
        return dict(zip(indexes, answers, strict=True))

    async def _get(self, index: int, path: str) -> httpx.Response | None:
        try:
            # httpx's timeout is per phase (connect, read, ...); this bounds the whole exchange.
            async with asyncio.timeout(self._timeout):
                response = await self._clients[index].get(path)
        except (httpx.HTTPError, TimeoutError, OSError) as error:
            # Restarting, killed or stuck: reported as missing by the caller, never waited for.
            log.warning("worker_missing index=%d path=%s error=%s", index, path, type(error).__name__)
            return None
        if response.status_code != 200:
            log.warning("worker_missing index=%d path=%s status=%d", index, path, response.status_code)
            return None
        return response

    async def close(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients.values()))
