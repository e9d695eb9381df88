"""JWT verification: the only module that reads tokens.

PyJWT, not python-jose: PyJWT is maintained, has no `ecdsa` dependency (and its timing CVE), and is what
FastAPI's documentation uses. Tokens never reach a log line from here.

Which key checks a token is decided by the family of its `alg` (after the allow-list): HMAC algorithms only
ever use JWT_SECRET, asymmetric ones only JWT_PUBLIC_KEY or a key from JWT_JWKS_URL, and the token is then
decoded with that one algorithm. So a public key can never serve as an HMAC secret, nor a secret as a
public key (algorithm confusion).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from app.services.token_cache import VerifiedTokens

log = logging.getLogger(__name__)


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


HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
# The cryptography key types each asymmetric algorithm verifies with.
_ASYMMETRIC_KEY_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), (RSAPublicKey,)),
    **dict.fromkeys(("ES256", "ES256K", "ES384", "ES512", "ES521"), (EllipticCurvePublicKey,)),
    "EdDSA": (Ed25519PublicKey, Ed448PublicKey),
}
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | frozenset(_ASYMMETRIC_KEY_TYPES)
# After a failed JWKS fetch, tokens that need a fetch are refused at once for this long instead of each
# waiting for its own attempt (an unreachable endpoint costs one timeout, not one per connection).
JWKS_RETRY_AFTER_SECONDS = 1.0

_KEY_NAMES = {
    RSAPublicKey: "an RSA key",
    EllipticCurvePublicKey: "an EC key",
    Ed25519PublicKey: "an Ed25519 key",
    Ed448PublicKey: "an Ed448 key",
}


def _key_name(key: object) -> str:
    for key_type, name in _KEY_NAMES.items():
        if isinstance(key, key_type):
            return name
    return "a symmetric key" if isinstance(key, bytes | str) else "a key of another type"


def _clip(value: object, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "…"


def load_public_key(pem: str) -> Any:
    """A PEM public key (`-----BEGIN PUBLIC KEY-----`) or certificate; `\\n` escapes are accepted."""
    if "\\n" in pem and "\n" not in pem:
        pem = pem.replace("\\n", "\n")
    data = pem.strip().encode()
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return serialization.load_pem_public_key(data)
    except ValueError:
        raise ValueError(
            "JWT_PUBLIC_KEY is not a PEM public key (-----BEGIN PUBLIC KEY-----) or certificate"
        ) from None


class _JwksKeys:
    """Signing keys from a JWKS endpoint, through PyJWT's PyJWKClient (which caches the key set and
    refetches it when a token names an unknown `kid`, at most once per cooldown).

    PyJWKClient does blocking HTTP, so a fetch runs in a thread, one at a time; a key already in the
    cached set is found without a thread.
    """

    def __init__(self, url: str, *, cache_seconds: float, cooldown_seconds: float, timeout: float) -> None:
        try:
            self._client = jwt.PyJWKClient(
                url, lifespan=cache_seconds, cooldown_duration=cooldown_seconds, timeout=timeout
            )
        except jwt.PyJWKClientError as error:
            raise ValueError(f"JWT_JWKS_URL is not usable: {error}") from None
        parts = urlsplit(url)
        self._where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # no query: it could hold a key
        self._lock = asyncio.Lock()
        self._failed_at: float | None = None

    async def key(self, kid: str) -> jwt.PyJWK:
        found = self._cached(kid)
        if found is not None:
            return found
        async with self._lock:
            found = self._cached(kid)  # fetched while this one waited
            if found is not None:
                return found
            if self._failed_at is not None and time.monotonic() - self._failed_at < JWKS_RETRY_AFTER_SECONDS:
                raise _jwks_unavailable()
            try:
                found = await asyncio.to_thread(self._client.get_signing_key, kid)
            except jwt.PyJWKClientConnectionError as error:
                self._failed_at = time.monotonic()
                log.warning("jwks_fetch_failed url=%s error=%s", self._where, _clip(error, 300))
                raise _jwks_unavailable() from None
            except jwt.PyJWKClientError:
                raise AuthError(f"token key id {_clip(kid)!r} is not in the JWKS") from None
            except jwt.PyJWTError as error:  # a key set that is not one, or has no usable key
                self._failed_at = time.monotonic()
                log.warning("jwks_unusable url=%s error=%s", self._where, _clip(error, 300))
                raise _jwks_unavailable() from None
            self._failed_at = None
            return found

    def _cached(self, kid: str) -> jwt.PyJWK | None:
        cache = self._client.jwk_set_cache
        keys = cache.get() if cache is not None else None
        if keys is None:
            return None
        for key in keys.keys:
            if key.key_id == kid and key.public_key_use in ("sig", None):
                return key
        return None


def _jwks_unavailable() -> AuthError:
    return AuthError("the token signing keys (JWKS) could not be fetched: try again later")


class TokenVerifier:
    """Turns a token into a Principal: algorithm allow-list, the key of the algorithm's family, signature,
    `exp` (required unless configured otherwise), `nbf`, `iat`, and `aud` / `iss` when configured."""

    def __init__(
        self,
        secret: str | None,
        algorithms: Sequence[str],
        *,
        require_exp: bool = True,
        allowed_roles: frozenset[str] = frozenset({"anon", "authenticated", "service_role"}),
        audience: Sequence[str] = (),
        issuer: str | None = None,
        leeway: float = 0.0,
        public_key: str | None = None,
        jwks_url: str | None = None,
        jwks_cache_seconds: float = 300.0,
        jwks_cooldown_seconds: float = 10.0,
        jwks_timeout: float = 5.0,
        cache_size: int = 0,
        cache_seconds: float = 60.0,
    ) -> None:
        unknown = [name for name in algorithms if name not in SUPPORTED_ALGORITHMS]
        if unknown:
            raise ValueError(
                f"JWT_ALGORITHMS: unsupported algorithm(s) {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(sorted(SUPPORTED_ALGORITHMS))}"
            )
        self._secret = secret
        self._algorithms = list(algorithms)
        self._required = ["exp"] if require_exp else []
        self._allowed_roles = allowed_roles
        self._audience = list(audience)
        self._issuer = issuer
        self._leeway = leeway
        # A reconnect storm presents the same tokens again: each is verified once (app.services.token_cache).
        self.verified: VerifiedTokens[Principal] = VerifiedTokens(size=cache_size, ttl=cache_seconds)
        asymmetric = [name for name in self._algorithms if name in _ASYMMETRIC_KEY_TYPES]
        self._public_key: Any = None
        if public_key:
            self._public_key = load_public_key(public_key)
            usable = [a for a in asymmetric if isinstance(self._public_key, _ASYMMETRIC_KEY_TYPES[a])]
            if not usable:
                raise ValueError(
                    f"JWT_PUBLIC_KEY is {_key_name(self._public_key)}, but JWT_ALGORITHMS "
                    f"({', '.join(self._algorithms)}) allows no algorithm that verifies with it"
                )
        self._jwks: _JwksKeys | None = None
        if jwks_url:
            if not asymmetric:
                raise ValueError(
                    "JWT_JWKS_URL is set, but JWT_ALGORITHMS allows no asymmetric algorithm (e.g. RS256)"
                )
            self._jwks = _JwksKeys(
                jwks_url,
                cache_seconds=jwks_cache_seconds,
                cooldown_seconds=jwks_cooldown_seconds,
                timeout=jwks_timeout,
            )

    @property
    def configured(self) -> bool:
        return self._secret is not None or self._public_key is not None or self._jwks is not None

    def expires_at(self, principal: Principal) -> float | None:
        """When the principal's token stops being accepted (epoch seconds, leeway included), or None."""
        exp = principal.claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            return None
        try:
            expires_at = float(exp) + self._leeway
        except OverflowError:  # an int beyond any float: never, in practice
            return None
        return expires_at if math.isfinite(expires_at) else None

    async def verify(self, token: str) -> Principal:
        known = self.verified.get(token)
        if known is not None:
            return known
        principal = await self._verify(token)
        self.verified.put(token, principal, self.expires_at(principal))
        return principal

    async def _verify(self, token: str) -> Principal:
        if not self.configured:
            raise AuthError(
                "token authentication is not configured on this server "
                "(JWT_SECRET is unset, and so are JWT_PUBLIC_KEY and JWT_JWKS_URL)"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthError("token is malformed") from None
        algorithm = header.get("alg")
        if algorithm not in self._algorithms:
            raise AuthError(f"token algorithm {_clip(algorithm, 20)!r} is not allowed")
        key = await self._key(algorithm, header)
        claims = self._decode(token, key, algorithm)
        subject = claims.get("sub")
        if subject is not None and not isinstance(subject, str):
            raise AuthError("token 'sub' claim must be a string")
        role = claims.get("role", DEFAULT_ROLE)
        # The service may connect as a superuser: this allow-list is what stops a token from becoming one.
        if not isinstance(role, str) or role not in self._allowed_roles:
            raise AuthError(f"token role {str(role)[:64]!r} is not allowed on this server")
        # The claims travel on as JSON (the audience of row-level security checks, the database's
        # request.jwt.claims): a token whose claims cannot be written back is refused here, not at subscribe.
        try:
            orjson.dumps(claims)
        except orjson.JSONEncodeError as error:
            raise AuthError(f"token claims cannot be used: {str(error)[:80]}") from None
        return Principal(user_id=subject, claims=MappingProxyType(claims), authenticated=True, role=role)

    async def _key(self, algorithm: str, header: Mapping[str, Any]) -> Any:
        """The key that verifies this algorithm: chosen by its family, never by what else is configured."""
        if algorithm in HMAC_ALGORITHMS:
            if self._secret is None:
                raise AuthError(f"{algorithm} tokens are not accepted: this server has no JWT_SECRET")
            return self._secret
        kid = header.get("kid")
        if self._jwks is not None and isinstance(kid, str):
            jwk = await self._jwks.key(kid)
            # The key's own algorithm (its `alg`, or the one its type implies) must be the token's.
            if jwk.algorithm_name != algorithm:
                raise AuthError(
                    f"token key id {_clip(kid)!r} is for {_clip(jwk.algorithm_name, 20)}, not {algorithm}"
                )
            key = jwk.key
        elif self._public_key is not None:
            key = self._public_key
        elif self._jwks is not None:
            raise AuthError("token has no 'kid' header, which is needed to pick its key from the JWKS")
        else:
            raise AuthError(
                f"{algorithm} tokens are not accepted: this server has no JWT_PUBLIC_KEY or JWT_JWKS_URL"
            )
        if not isinstance(key, _ASYMMETRIC_KEY_TYPES[algorithm]):
            raise AuthError(f"token algorithm {algorithm} cannot be verified with {_key_name(key)}")
        return key

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience or None,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": self._required},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("token is not valid yet (its nbf or iat is in the future)") from None
        except jwt.InvalidSignatureError:
            raise AuthError("token signature is invalid") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthError(f"token is missing the required '{error.claim}' claim") from None
        except jwt.InvalidAudienceError:
            if not self._audience:
                raise AuthError(
                    "token has an 'aud' claim, but this server accepts none (JWT_AUDIENCE is unset)"
                ) from None
            raise AuthError("token audience ('aud') is not one this server accepts") from None
        except jwt.InvalidIssuerError:
            raise AuthError("token issuer ('iss') is not the one this server accepts") from None
        except jwt.exceptions.InvalidSubjectError:
            raise AuthError("token 'sub' claim must be a string") from None
        except jwt.PyJWTError:
            raise AuthError("token is invalid") from None
        return claims
