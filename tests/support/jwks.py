"""Asymmetric signing keys and a JWKS endpoint served from a thread on 127.0.0.1 (no network beyond it)."""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


@dataclass
class SigningKey:
    """A private key, its `kid` and algorithm: signs tokens, and publishes its public half."""

    kid: str
    algorithm: str
    private_key: Any

    @classmethod
    def generate(cls, kid: str, algorithm: str = "RS256") -> SigningKey:
        if algorithm.startswith(("RS", "PS")):
            key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif algorithm == "ES256":
            key = ec.generate_private_key(ec.SECP256R1())
        elif algorithm == "EdDSA":
            key = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(algorithm)
        return cls(kid, algorithm, key)

    def sign(self, claims: dict[str, Any] | None = None, *, kid: str | None = "", **extra: Any) -> str:
        """A token with `sub`, `exp` in 10 minutes and `role`, plus `claims`; `kid=None` leaves it out."""
        body: dict[str, Any] = {"sub": "user-1", "exp": int(time.time()) + 600, "role": "authenticated"}
        body.update(claims or {})
        body.update(extra)
        headers = {} if kid is None else {"kid": kid or self.kid}
        return jwt.encode(body, self.private_key, algorithm=self.algorithm, headers=headers)

    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    def jwk(self, **overrides: Any) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        public: dict[str, Any] = algorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        public.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        public.update(overrides)
        return public


class JwksServer:
    """Serves `{"keys": self.keys}` at /jwks.json and counts requests; `keys` may change between
    requests (a key rotation)."""

    def __init__(self, keys: list[dict[str, Any]] | None = None) -> None:
        self.keys: list[dict[str, Any]] = list(keys or [])
        self.requests = 0
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.requests += 1
                body = json.dumps({"keys": served.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="jwks", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def unreachable_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/jwks.json"
