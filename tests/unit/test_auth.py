"""JWT verification: TokenVerifier turns a token into a Principal or an AuthError with a readable reason."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from app.services.auth import ANONYMOUS, AuthError, Principal, TokenVerifier

SECRET = "unit-test-secret-that-is-long-enough-for-hs512-keys-0123456789abcdef"


def token(claims: dict[str, Any], *, secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def in_(seconds: float) -> int:
    return int(time.time() + seconds)


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def rejected(verifier: TokenVerifier, tok: str) -> str:
    with pytest.raises(AuthError) as caught:
        verifier.verify(tok)
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
def test_valid_token(algorithm: str) -> None:
    claims = {"sub": "user-42", "exp": in_(60), "role": "service_role", "tenant": {"id": 7}}
    principal = TokenVerifier(SECRET, ["HS256", "HS384"]).verify(token(claims, algorithm=algorithm))
    assert principal.user_id == "user-42"
    assert principal.authenticated is True
    assert dict(principal.claims) == claims


def test_role_comes_from_the_claim_and_defaults_to_authenticated(verifier: TokenVerifier) -> None:
    assert verifier.verify(token({"sub": "u", "exp": in_(60)})).role == "authenticated"
    assert verifier.verify(token({"sub": "u", "exp": in_(60), "role": "anon"})).role == "anon"
    assert ANONYMOUS.role == "anon"


@pytest.mark.parametrize("role", ["postgres", "admin", "no_such_role", "", 7, ["anon"]])
def test_roles_outside_the_allow_list_are_refused(verifier: TokenVerifier, role: object) -> None:
    assert "not allowed" in rejected(verifier, token({"sub": "u", "exp": in_(60), "role": role}))


def test_the_allow_list_is_configurable() -> None:
    only_editors = TokenVerifier(SECRET, ["HS256"], allowed_roles=frozenset({"editor"}))
    assert only_editors.verify(token({"sub": "u", "exp": in_(60), "role": "editor"})).role == "editor"
    assert "not allowed" in rejected(only_editors, token({"sub": "u", "exp": in_(60)}))


def test_claims_are_read_only(verifier: TokenVerifier) -> None:
    principal = verifier.verify(token({"sub": "u", "exp": in_(60)}))
    with pytest.raises(TypeError):
        principal.claims["sub"] = "someone-else"  # type: ignore[index]


def test_token_without_sub_is_authenticated_without_user(verifier: TokenVerifier) -> None:
    principal = verifier.verify(token({"exp": in_(60), "scope": "read"}))
    assert principal.user_id is None
    assert principal.authenticated is True


def test_expired(verifier: TokenVerifier) -> None:
    assert "expired" in rejected(verifier, token({"sub": "u", "exp": in_(-3600)}))


def test_nbf_in_the_future(verifier: TokenVerifier) -> None:
    message = rejected(verifier, token({"sub": "u", "exp": in_(7200), "nbf": in_(3600)}))
    assert "not valid yet" in message and "nbf" in message


def test_nbf_in_the_past_is_fine(verifier: TokenVerifier) -> None:
    assert verifier.verify(token({"sub": "u", "exp": in_(60), "nbf": in_(-60)})).user_id == "u"


def test_wrong_secret(verifier: TokenVerifier) -> None:
    tok = token({"sub": "u", "exp": in_(60)}, secret=SECRET + "-but-not-quite")
    assert "signature" in rejected(verifier, tok)


def test_tampered_payload(verifier: TokenVerifier) -> None:
    header, _, signature = token({"sub": "u", "exp": in_(60)}).split(".")
    forged = f"{header}.{b64url({'sub': 'admin', 'exp': in_(60)})}.{signature}"
    assert "signature" in rejected(verifier, forged)


def test_algorithm_not_on_allow_list(verifier: TokenVerifier) -> None:
    message = rejected(verifier, token({"sub": "u", "exp": in_(60)}, algorithm="HS512"))
    assert "HS512" in message and "not allowed" in message


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_rejected(alg: str) -> None:
    unsigned = f"{b64url({'alg': alg, 'typ': 'JWT'})}.{b64url({'sub': 'admin', 'exp': in_(60)})}."
    message = rejected(TokenVerifier(SECRET, ["HS256", "HS384", "HS512"]), unsigned)
    assert "not allowed" in message


def test_missing_alg_is_rejected(verifier: TokenVerifier) -> None:
    unsigned = f"{b64url({'typ': 'JWT'})}.{b64url({'sub': 'u', 'exp': in_(60)})}.sig"
    assert "not allowed" in rejected(verifier, unsigned)


def test_missing_exp_is_rejected_by_default(verifier: TokenVerifier) -> None:
    message = rejected(verifier, token({"sub": "u"}))
    assert "missing" in message and "'exp'" in message


def test_missing_exp_is_accepted_when_not_required() -> None:
    principal = TokenVerifier(SECRET, ["HS256"], require_exp=False).verify(token({"sub": "u"}))
    assert principal.user_id == "u" and principal.authenticated


def test_expired_is_rejected_even_when_exp_not_required() -> None:
    verifier = TokenVerifier(SECRET, ["HS256"], require_exp=False)
    assert "expired" in rejected(verifier, token({"sub": "u", "exp": in_(-3600)}))


@pytest.mark.parametrize(
    "garbage",
    ["", "not-a-token", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9", "eyJhbGciOiJIUzI1NiJ9.%%%.xyz", "é.é.é"],
)
def test_garbage(verifier: TokenVerifier, garbage: str) -> None:
    assert "malformed" in rejected(verifier, garbage)


@pytest.mark.parametrize("header", [[1, 2], "a string", 5])
def test_non_object_header(verifier: TokenVerifier, header: object) -> None:
    encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    rejected(verifier, f"{encoded}.{b64url({'sub': 'u'})}.sig")


@pytest.mark.parametrize("sub", [123, ["u"], {"id": "u"}, True])
def test_non_string_sub(verifier: TokenVerifier, sub: object) -> None:
    # PyJWT refuses to encode a non-string sub, so sign the token by hand.
    unsigned = f"{b64url({'alg': 'HS256', 'typ': 'JWT'})}.{b64url({'sub': sub, 'exp': in_(60)})}"
    signature = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
        unsigned.encode(), SECRET.encode()
    )
    forged = f"{unsigned}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    rejected(verifier, forged)


def test_secret_unset_rejects_every_token() -> None:
    verifier = TokenVerifier(None, ["HS256"])
    unsigned = f"{b64url({'alg': 'none'})}.{b64url({'sub': 'u'})}."
    for tok in (token({"sub": "u", "exp": in_(60)}), token({"sub": "u"}, secret=SECRET * 2), unsigned, "x"):
        assert "JWT_SECRET" in rejected(verifier, tok)
