"""Errors the client raises to the application."""

from __future__ import annotations

from fluxbase_realtime_client.messages import Error


class RealtimeError(Exception):
    """Base of every error of this client."""


class ServerError(RealtimeError):
    """The server answered a request with an `error`; `message` is that frame."""

    def __init__(self, message: Error) -> None:
        super().__init__(message.error)
        self.message = message

    @property
    def code(self) -> str | None:
        return self.message.code


class SubscriptionError(ServerError):
    """A subscription was refused, or ended by the server (e.g. `forbidden` after a token refresh)."""


class ConnectionLost(RealtimeError):
    """The connection closed before the server answered a request; it may or may not have been applied."""


class TokenExpiredError(RealtimeError):
    """The client's fixed token has expired: pass an async token function to keep connecting."""


class ClientClosed(RealtimeError):
    """The client was closed."""
