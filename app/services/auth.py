"""JWT verification: the only module that reads tokens.

PyJWT, not python-jose: PyJWT is maintained, has no `ecdsa` dependency (and its timing CVE), and is what
FastAPI's documentation uses. Tokens never reach a log line from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt


class AuthError(Exception):
    """A token was refused; `str(error)` is the reason sent to the client (it never contains the token)."""


ANONYMOUS_ROLE = "anon"
DEFAULT_ROLE = "authenticated"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on the other end of a connection: anonymous, or a token's subject and claims.

    `role` is the database role the connection acts as when row-level security is checked.
    """

    user_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    authenticated: bool = False
    role: str = ANONYMOUS_ROLE


ANONYMOUS = Principal()


class TokenVerifier:
    """Checks signature, algorithm allow-list, `exp` and `nbf`, and turns a token into a Principal."""

    def __init__(
        self,
        secret: str | None,
        algorithms: list[str],
        *,
        require_exp: bool = True,
        allowed_roles: frozenset[str] = frozenset({"anon", "authenticated", "service_role"}),
    ) -> None:
        self._secret = secret
        self._algorithms = list(algorithms)
        self._required = ["exp"] if require_exp else []
        self._allowed_roles = allowed_roles

    def verify(self, token: str) -> Principal:
        if self._secret is None:
            raise AuthError("token authentication is not configured on this server (JWT_SECRET is unset)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthError("token is malformed") from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise AuthError(f"token algorithm {str(algorithm)[:20]!r} is not allowed")
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=self._algorithms, options={"require": self._required}
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token is not valid yet (nbf is in the future)") from None
        except jwt.InvalidSignatureError:
            raise AuthError("token signature is invalid") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthError(f"token is missing the required '{error.claim}' claim") from None
        except jwt.InvalidTokenError:
            raise AuthError("token is invalid") from None
        subject = claims.get("sub")
        if subject is not None and not isinstance(subject, str):
            raise AuthError("token 'sub' claim must be a string")
        role = claims.get("role", DEFAULT_ROLE)
        # The service may connect as a superuser: this allow-list is what stops a token from becoming one.
        if not isinstance(role, str) or role not in self._allowed_roles:
            raise AuthError(f"token role {str(role)[:64]!r} is not allowed on this server")
        return Principal(user_id=subject, claims=MappingProxyType(claims), authenticated=True, role=role)
