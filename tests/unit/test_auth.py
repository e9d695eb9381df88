"""JWT verification: TokenVerifier turns a token into a Principal or an AuthError with a readable reason."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from app.services.auth import ANONYMOUS, AuthError, Principal, TokenVerifier
from tests.support.jwks import JwksServer, SigningKey, unreachable_url

SECRET = "unit-test-secret-that-is-long-enough-for-hs512-keys-0123456789abcdef"


def token(claims: dict[str, Any], *, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def in_(seconds: float) -> int:
    return int(time.time() + seconds)


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def rejected(verifier: TokenVerifier, tok: str) -> str:
    with pytest.raises(AuthError) as caught:
        await verifier.verify(tok)
    message = str(caught.value)
    assert message
    if tok:
        assert tok not in message
    return message


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(SECRET, ["HS256"])


def test_anonymous_principal() -> None:
    assert ANONYMOUS == Principal(user_id=None, authenticated=False)
    assert dict(ANONYMOUS.claims) == {}


@pytest.mark.parametrize("algorithm", ["HS256", "HS384"])
async def test_valid_token(algorithm: str) -> None:
    claims = {"sub": "user-42", "exp": in_(60), "role": "service_role", "tenant": {"id": 7}}
    principal = await TokenVerifier(SECRET, ["HS256", "HS384"]).verify(token(claims, algorithm=algorithm))
    assert principal.user_id == "user-42"
    assert principal.authenticated is True
    assert dict(principal.claims) == claims


async def test_role_comes_from_the_claim_and_defaults_to_authenticated(verifier: TokenVerifier) -> None:
    assert (await verifier.verify(token({"sub": "u", "exp": in_(60)}))).role == "authenticated"
    assert (await verifier.verify(token({"sub": "u", "exp": in_(60), "role": "anon"}))).role == "anon"
    assert ANONYMOUS.role == "anon"


@pytest.mark.parametrize("role", ["postgres", "admin", "no_such_role", "", 7, ["anon"]])
async def test_roles_outside_the_allow_list_are_refused(verifier: TokenVerifier, role: object) -> None:
    assert "not allowed" in await rejected(verifier, token({"sub": "u", "exp": in_(60), "role": role}))


async def test_the_allow_list_is_configurable() -> None:
    only_editors = TokenVerifier(SECRET, ["HS256"], allowed_roles=frozenset({"editor"}))
    editor = await only_editors.verify(token({"sub": "u", "exp": in_(60), "role": "editor"}))
    assert editor.role == "editor"
    assert "not allowed" in await rejected(only_editors, token({"sub": "u", "exp": in_(60)}))


async def test_claims_are_read_only(verifier: TokenVerifier) -> None:
    principal = await verifier.verify(token({"sub": "u", "exp": in_(60)}))
    with pytest.raises(TypeError):
        principal.claims["sub"] = "someone-else"  # type: ignore[index]


async def test_token_without_sub_is_authenticated_without_user(verifier: TokenVerifier) -> None:
    principal = await verifier.verify(token({"exp": in_(60), "scope": "read"}))
    assert principal.user_id is None
    assert principal.authenticated is True


async def test_expired(verifier: TokenVerifier) -> None:
    assert "expired" in await rejected(verifier, token({"sub": "u", "exp": in_(-3600)}))


async def test_nbf_in_the_future(verifier: TokenVerifier) -> None:
    message = await rejected(verifier, token({"sub": "u", "exp": in_(7200), "nbf": in_(3600)}))
    assert "not valid yet" in message and "nbf" in message


async def test_nbf_in_the_past_is_fine(verifier: TokenVerifier) -> None:
    assert (await verifier.verify(token({"sub": "u", "exp": in_(60), "nbf": in_(-60)}))).user_id == "u"


async def test_wrong_secret(verifier: TokenVerifier) -> None:
    tok = token({"sub": "u", "exp": in_(60)}, secret=SECRET + "-but-not-quite")
    assert "signature" in await rejected(verifier, tok)


async def test_tampered_payload(verifier: TokenVerifier) -> None:
    header, _, signature = token({"sub": "u", "exp": in_(60)}).split(".")
    forged = f"{header}.{b64url({'sub': 'admin', 'exp': in_(60)})}.{signature}"
    assert "signature" in await rejected(verifier, forged)


async def test_algorithm_not_on_allow_list(verifier: TokenVerifier) -> None:
    message = await rejected(verifier, token({"sub": "u", "exp": in_(60)}, algorithm="HS512"))
    assert "HS512" in message and "not allowed" in message


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none_is_rejected(alg: str) -> None:
    unsigned = f"{b64url({'alg': alg, 'typ': 'JWT'})}.{b64url({'sub': 'admin', 'exp': in_(60)})}."
    message = await rejected(TokenVerifier(SECRET, ["HS256", "HS384", "HS512"]), unsigned)
    assert "not allowed" in message


async def test_missing_alg_is_rejected(verifier: TokenVerifier) -> None:
    unsigned = f"{b64url({'typ': 'JWT'})}.{b64url({'sub': 'u', 'exp': in_(60)})}.sig"
    assert "not allowed" in await rejected(verifier, unsigned)


async def test_missing_exp_is_rejected_by_default(verifier: TokenVerifier) -> None:
    message = await rejected(verifier, token({"sub": "u"}))
    assert "missing" in message and "'exp'" in message


async def test_missing_exp_is_accepted_when_not_required() -> None:
    principal = await TokenVerifier(SECRET, ["HS256"], require_exp=False).verify(token({"sub": "u"}))
    assert principal.user_id == "u" and principal.authenticated


async def test_expired_is_rejected_even_when_exp_not_required() -> None:
    verifier = TokenVerifier(SECRET, ["HS256"], require_exp=False)
    assert "expired" in await rejected(verifier, token({"sub": "u", "exp": in_(-3600)}))


@pytest.mark.parametrize(
    "garbage",
    ["", "not-a-token", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJIUzI1NiJ9.%%%.xyz", "é.é.é"],
)
async def test_garbage(verifier: TokenVerifier, garbage: str) -> None:
    assert "malformed" in await rejected(verifier, garbage)


@pytest.mark.parametrize("header", [[1, 2], "a string", 5])
async def test_non_object_header(verifier: TokenVerifier, header: object) -> None:
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    await rejected(verifier, f"{encoded}.{b64url({'sub': 'u'})}.sig")


@pytest.mark.parametrize("sub", [123, ["u"], {"id": "u"}, True])
async def test_non_string_sub(verifier: TokenVerifier, sub: object) -> None:
    # PyJWT refuses to encode a non-string sub, so sign the token by hand.
    unsigned = f"{b64url({'alg': 'HS256', 'typ': 'JWT'})}.{b64url({'sub': sub, 'exp': in_(60)})}"
    signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        unsigned.encode(), SECRET.encode()
    )
    forged = f"{unsigned}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    await rejected(verifier, forged)


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, [[[2**70]]]])
async def test_claims_that_cannot_be_written_back_as_json_are_refused(
    verifier: TokenVerifier, value: object
) -> None:
    # Python reads any integer from JSON; the claims must be written again for the database.
    message = await rejected(verifier, token({"sub": "u", "exp": in_(60), "counter": value}))
    assert "claims cannot be used" in message and "64-bit" in message


async def test_the_largest_64_bit_integers_in_claims_are_fine(verifier: TokenVerifier) -> None:
    principal = await verifier.verify(
        token({"sub": "u", "exp": in_(60), "big": 2**64 - 1, "small": -(2**63)})
    )
    assert principal.claims["big"] == 2**64 - 1 and principal.claims["small"] == -(2**63)


async def test_secret_unset_rejects_every_token() -> None:
    verifier = TokenVerifier(None, ["HS256"])
    unsigned = f"{b64url({'alg': 'none'})}.{b64url({'sub': 'u'})}."
    for tok in (token({"sub": "u", "exp": in_(60)}), token({"sub": "u"}, secret=SECRET * 2), unsigned, "x"):
        assert "JWT_SECRET" in await rejected(verifier, tok)


# --- audience, issuer, leeway ---------------------------------------------------------------------------


async def test_audience_is_checked_when_configured() -> None:
    verifier = TokenVerifier(SECRET, ["HS256"], audience=["realtime", "api"])
    assert (await verifier.verify(token({"sub": "u", "exp": in_(60), "aud": "realtime"}))).user_id == "u"
    assert (await verifier.verify(token({"sub": "u", "exp": in_(60), "aud": ["x", "api"]}))).user_id == "u"
    assert "audience" in await rejected(verifier, token({"sub": "u", "exp": in_(60), "aud": "other"}))
    assert "'aud'" in await rejected(verifier, token({"sub": "u", "exp": in_(60)}))


async def test_a_token_with_an_audience_is_refused_when_none_is_configured(verifier: TokenVerifier) -> None:
    assert "JWT_AUDIENCE" in await rejected(verifier, token({"sub": "u", "exp": in_(60), "aud": "realtime"}))


async def test_issuer_is_checked_when_configured(verifier: TokenVerifier) -> None:
    strict = TokenVerifier(SECRET, ["HS256"], issuer="https://auth.example")
    good = {"sub": "u", "exp": in_(60), "iss": "https://auth.example"}
    assert (await strict.verify(token(good))).user_id == "u"
    assert "issuer" in await rejected(strict, token({**good, "iss": "https://evil.example"}))
    assert "'iss'" in await rejected(strict, token({"sub": "u", "exp": in_(60)}))
    # Without JWT_ISSUER any issuer is accepted.
    assert (await verifier.verify(token({**good, "iss": "https://evil.example"}))).user_id == "u"


async def test_leeway_allows_a_little_clock_skew() -> None:
    just_expired = token({"sub": "u", "exp": in_(-5)})
    almost_valid = token({"sub": "u", "exp": in_(60), "nbf": in_(5)})
    strict = TokenVerifier(SECRET, ["HS256"])
    assert "expired" in await rejected(strict, just_expired)
    assert "not valid yet" in await rejected(strict, almost_valid)
    lenient = TokenVerifier(SECRET, ["HS256"], leeway=30)
    assert (await lenient.verify(almost_valid)).user_id == "u"
    principal = await lenient.verify(just_expired)
    assert principal.user_id == "u"
    assert lenient.expires_at(principal) == principal.claims["exp"] + 30


async def test_expires_at(verifier: TokenVerifier) -> None:
    exp = in_(60)
    assert verifier.expires_at(await verifier.verify(token({"sub": "u", "exp": exp}))) == exp
    no_exp = TokenVerifier(SECRET, ["HS256"], require_exp=False)
    assert no_exp.expires_at(await no_exp.verify(token({"sub": "u"}))) is None
    assert verifier.expires_at(ANONYMOUS) is None


# --- asymmetric keys ------------------------------------------------------------------------------------

ASYMMETRIC = ["RS256", "RS384", "PS256", "ES256", "EdDSA"]


@pytest.fixture(scope="module")
def keys() -> dict[str, SigningKey]:
    """One key per algorithm family (RSA keys are slow to generate: shared by the module)."""
    rsa_key = SigningKey.generate("rsa-1", "RS256")
    return {
        "RS256": rsa_key,
        "RS384": SigningKey("rsa-1", "RS384", rsa_key.private_key),
        "PS256": SigningKey("rsa-1", "PS256", rsa_key.private_key),
        "ES256": SigningKey.generate("ec-1", "ES256"),
        "EdDSA": SigningKey.generate("ed-1", "EdDSA"),
    }


@pytest.fixture(scope="module")
def strangers(keys: dict[str, SigningKey]) -> dict[str, SigningKey]:
    """Other private keys, same algorithms and kids."""
    rsa_key = SigningKey.generate("rsa-1", "RS256").private_key
    return {
        algorithm: SigningKey(
            key.kid,
            algorithm,
            rsa_key if algorithm[:2] in ("RS", "PS") else SigningKey.generate(key.kid, algorithm).private_key,
        )
        for algorithm, key in keys.items()
    }


@pytest.mark.parametrize("algorithm", ASYMMETRIC)
async def test_public_key_verifies_its_algorithms(
    keys: dict[str, SigningKey], strangers: dict[str, SigningKey], algorithm: str
) -> None:
    key = keys[algorithm]
    verifier = TokenVerifier(None, [algorithm], public_key=key.public_pem())
    principal = await verifier.verify(key.sign({"sub": "pk-user"}))
    assert principal.user_id == "pk-user" and principal.authenticated
    # Same algorithm, another private key: the signature does not verify.
    assert "signature" in await rejected(verifier, strangers[algorithm].sign())


async def test_public_key_with_escaped_newlines_and_certificates(keys: dict[str, SigningKey]) -> None:
    key = keys["ES256"]
    escaped = key.public_pem().replace("\n", "\\n")
    assert (await TokenVerifier(None, ["ES256"], public_key=escaped).verify(key.sign())).user_id == "user-1"
    certificate = _self_signed_certificate(key)
    assert (await TokenVerifier(None, ["ES256"], public_key=certificate).verify(key.sign())).authenticated


async def test_public_key_of_another_family_is_not_used(keys: dict[str, SigningKey]) -> None:
    # ES256 is allowed and the key is an EC key: an RS256 token (also allowed) cannot be checked with it.
    verifier = TokenVerifier(None, ["RS256", "ES256"], public_key=keys["ES256"].public_pem())
    assert "EC key" in await rejected(verifier, keys["RS256"].sign())
    assert (await verifier.verify(keys["ES256"].sign())).authenticated


async def test_algorithm_confusion_hmac_with_the_public_key_as_secret(keys: dict[str, SigningKey]) -> None:
    """The classic attack: an HS256 token whose 'secret' is the server's public key (which is public)."""
    pem = keys["RS256"].public_pem()
    forged = _hs256_by_hand({"sub": "admin", "exp": in_(60), "role": "service_role"}, pem.encode())
    # No JWT_SECRET: HS256 is never checked against the public key.
    only_public = TokenVerifier(None, ["RS256", "HS256"], public_key=pem)
    assert "JWT_SECRET" in await rejected(only_public, forged)
    # With a JWT_SECRET, HS256 is checked against it alone.
    both = TokenVerifier(SECRET, ["RS256", "HS256"], public_key=pem)
    assert "signature" in await rejected(both, forged)
    # A secret that happens to be a PEM key is still only ever an HMAC secret, refused by PyJWT as such.
    pem_as_secret = TokenVerifier(pem, ["RS256", "HS256"], public_key=pem)
    await rejected(pem_as_secret, forged)


async def test_algorithm_confusion_asymmetric_alg_without_a_public_key() -> None:
    """An RS256 token on a server with only an HMAC secret is refused, never checked with the secret."""
    key = SigningKey.generate("k", "RS256")
    verifier = TokenVerifier(SECRET, ["HS256", "RS256"])
    assert "JWT_PUBLIC_KEY" in await rejected(verifier, key.sign())


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"algorithms": ["HS256", "none"]}, "unsupported"),
        ({"algorithms": ["HS999"]}, "unsupported"),
        ({"algorithms": ["RS256"], "public_key": "not a key"}, "PEM"),
        ({"algorithms": ["HS256"], "public_key": "EC"}, "allows no algorithm"),
        ({"algorithms": ["HS256"], "jwks_url": "https://auth.example/jwks.json"}, "asymmetric"),
        ({"algorithms": ["RS256"], "jwks_url": "file:///etc/passwd"}, "JWT_JWKS_URL"),
    ],
)
def test_configuration_mistakes_fail_at_startup(
    keys: dict[str, SigningKey], kwargs: dict[str, Any], words: str
) -> None:
    if kwargs.get("public_key") == "EC":
        kwargs = {**kwargs, "public_key": keys["ES256"].public_pem()}
    algorithms = kwargs.pop("algorithms")
    with pytest.raises(ValueError, match=words):
        TokenVerifier(SECRET, algorithms, **kwargs)


# --- JWKS -----------------------------------------------------------------------------------------------


def jwks_verifier(url: str, *, cooldown: float = 0.0, algorithms: list[str] | None = None) -> TokenVerifier:
    return TokenVerifier(
        None, algorithms or ["RS256", "ES256"], jwks_url=url, jwks_cooldown_seconds=cooldown, jwks_timeout=5
    )


async def test_jwks_keys_are_fetched_once_and_cached(keys: dict[str, SigningKey]) -> None:
    with JwksServer([keys["RS256"].jwk(), keys["ES256"].jwk()]) as jwks:
        verifier = jwks_verifier(jwks.url)
        for _ in range(3):
            assert (await verifier.verify(keys["RS256"].sign())).user_id == "user-1"
            assert (await verifier.verify(keys["ES256"].sign({"sub": "ec"}))).user_id == "ec"
        assert jwks.requests == 1


async def test_jwks_rotation_a_new_kid_is_fetched(keys: dict[str, SigningKey]) -> None:
    rotated = SigningKey.generate("rsa-rotated", "RS256")
    with JwksServer([keys["RS256"].jwk()]) as jwks:
        verifier = jwks_verifier(jwks.url)
        assert (await verifier.verify(keys["RS256"].sign())).authenticated
        jwks.keys = [keys["RS256"].jwk(), rotated.jwk()]
        assert (await verifier.verify(rotated.sign({"sub": "after-rotation"}))).user_id == "after-rotation"
        assert jwks.requests == 2
        # The old key is still served, and still accepted, from the refreshed cache.
        assert (await verifier.verify(keys["RS256"].sign())).authenticated
        assert jwks.requests == 2


async def test_jwks_unknown_kid_is_refused(keys: dict[str, SigningKey]) -> None:
    stranger = SigningKey("nobody-knows", "RS256", keys["RS256"].private_key)
    with JwksServer([keys["RS256"].jwk()]) as jwks:
        verifier = jwks_verifier(jwks.url)
        message = await rejected(verifier, stranger.sign())
        assert "nobody-knows" in message and "not in the JWKS" in message


async def test_jwks_refetches_for_unknown_kids_at_most_once_per_cooldown(keys: dict[str, SigningKey]) -> None:
    with JwksServer([keys["RS256"].jwk()]) as jwks:
        verifier = jwks_verifier(jwks.url, cooldown=3600)
        assert (await verifier.verify(keys["RS256"].sign())).authenticated
        for number in range(5):
            await rejected(
                verifier, SigningKey(f"random-{number}", "RS256", keys["RS256"].private_key).sign()
            )
        assert jwks.requests == 1


async def test_jwks_unreachable_is_refused_with_a_readable_error(keys: dict[str, SigningKey]) -> None:
    verifier = jwks_verifier(unreachable_url())
    for _ in range(2):
        message = await rejected(verifier, keys["RS256"].sign())
        assert "JWKS" in message and "could not be fetched" in message


async def test_jwks_needs_a_kid(keys: dict[str, SigningKey]) -> None:
    with JwksServer([keys["RS256"].jwk()]) as jwks:
        assert "'kid'" in await rejected(jwks_verifier(jwks.url), keys["RS256"].sign(kid=None))


async def test_jwks_key_must_match_the_token_algorithm(keys: dict[str, SigningKey]) -> None:
    # The JWKS says the RSA key is for RS256; a PS256 token naming it is refused.
    with JwksServer([keys["RS256"].jwk()]) as jwks:
        verifier = jwks_verifier(jwks.url, algorithms=["RS256", "PS256"])
        pss = SigningKey("rsa-1", "PS256", keys["RS256"].private_key)
        assert "not PS256" in await rejected(verifier, pss.sign())


async def test_jwks_symmetric_keys_are_never_used(keys: dict[str, SigningKey]) -> None:
    """A JWKS that (wrongly) publishes an HMAC key: a token naming it, in any algorithm, is refused."""
    secret = b"published-hmac-secret-that-anyone-can-read-000000"
    oct_key = {"kty": "oct", "kid": "shared", "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}
    with JwksServer([keys["RS256"].jwk(), oct_key]) as jwks:
        verifier = jwks_verifier(jwks.url, algorithms=["RS256", "HS256"])
        forged = jwt.encode(
            {"sub": "admin", "exp": in_(60)}, secret, algorithm="HS256", headers={"kid": "shared"}
        )
        assert "JWT_SECRET" in await rejected(verifier, forged)
        as_rsa = _rs256_header_with_hmac_signature({"sub": "admin", "exp": in_(60)}, "shared", secret)
        assert "not RS256" in await rejected(verifier, as_rsa)


def _hs256_by_hand(claims: dict[str, Any], key: bytes, header: dict[str, Any] | None = None) -> str:
    # PyJWT refuses to use a PEM key as an HMAC secret, so sign by hand.
    head = b64url(header or {"alg": "HS256", "typ": "JWT"})
    unsigned = f"{head}.{b64url(claims)}"
    signature = hmac.new(key, unsigned.encode(), hashlib.sha256).digest()
    return f"{unsigned}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def _rs256_header_with_hmac_signature(claims: dict[str, Any], kid: str, key: bytes) -> str:
    return _hs256_by_hand(claims, key, {"alg": "RS256", "typ": "JWT", "kid": kid})


def _self_signed_certificate(key: SigningKey) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "auth.example")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key.private_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()
