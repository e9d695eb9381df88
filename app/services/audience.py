"""Audiences: subscribers that row-level security cannot tell apart, checked once for all of them."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from app.services.auth import Principal

# Claims that differ between two tokens of the same user and session; policies do not see them, so that
# every connection of a user shares one audience (and one check per change).
TIME_CLAIMS = frozenset({"exp", "iat", "nbf", "jti", "auth_time"})
SERVICE_ROLE = "service_role"


@dataclass(frozen=True, slots=True)
class Audience:
    """A database role and the claims policies see (canonical JSON): what a policy can depend on."""

    role: str
    claims: str

    @property
    def bypasses_rls(self) -> bool:
        """service_role is trusted with every row and column of every table."""
        return self.role == SERVICE_ROLE

    @property
    def sub(self) -> str | None:
        value = orjson.loads(self.claims).get("sub")
        return value if isinstance(value, str) else None


def audience_of(principal: Principal) -> Audience:
    claims = {k: v for k, v in principal.claims.items() if k not in TIME_CLAIMS}
    claims.setdefault("role", principal.role)
    return Audience(principal.role, orjson.dumps(claims, option=orjson.OPT_SORT_KEYS).decode())
