"""Running the application under uvicorn with the settings this service needs."""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from fastapi import FastAPI

from app.config import Settings
from app.logs import logging_config
from app.routers.realtime import realtime_front_door
from app.wire import DirectWriteProtocol


def uvicorn_config(
    app: FastAPI, settings: Settings, *, host: str, port: int, backlog: int | None = None
) -> uvicorn.Config:
    """`backlog`: this process's listen backlog (a worker's share), REALTIME_LISTEN_BACKLOG by default."""
    return uvicorn.Config(
        realtime_front_door(app),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        ws=DirectWriteProtocol,  # websockets-sansio, plus the direct path for broadcasts (app.wire)
        ws_per_message_deflate=settings.realtime_ws_compression,
        # uvicorn drops frames over this without a word; ours are checked in the app, which explains the
        # refusal, so uvicorn's limit sits well above REALTIME_MAX_MESSAGE_BYTES.
        ws_max_size=max(4 * settings.realtime_max_message_bytes, 1 << 20),
        # The application's heartbeat replaces protocol pings: one timer for all connections.
        ws_ping_interval=None,
        ws_ping_timeout=None,
        log_config=logging_config(settings.log_level, settings.log_format),
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
        lifespan="on",
        # A reconnect storm arrives faster than one process accepts: past the backlog the kernel drops SYNs
        # and clients wait for their retransmission (1 s, then 3 s), so the queue is a setting.
        backlog=settings.realtime_listen_backlog if backlog is None else backlog,
    )


class RealtimeServer(uvicorn.Server):
    """uvicorn's server, closing WebSockets with 1001 (going away) on shutdown.

    uvicorn itself closes them with 1012 (service restart) after it stops listening; the service's own
    close comes first so that clients see the documented code.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        services = getattr(self._app.state, "services", None)
        if services is not None:
            services.hub.close_all()
            for _ in range(200):
                if services.hub.connection_count == 0:
                    break
                await asyncio.sleep(0.01)
        await super().shutdown(sockets)
