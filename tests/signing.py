"""JWTs signed with keys the tests generate, shaped like the sandbox's and Epic's."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

ISSUER = "https://ehr.example.org"


@dataclass
class Signer:
    """A CDS client's keys (EC P-384 and RSA) and its JWK Set; signs tokens like the sandbox or Epic."""

    ec: Any
    rsa: Any

    def jwks(self) -> dict[str, Any]:
        keys = [jwt.algorithms.ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True) | {"kid": "ec-1"},
                jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True) | {"kid": "rsa-1"}]
        return {"keys": keys}

    def token(self, aud: str, *, alg: str = "ES384", lifetime: int = 300, headers: dict[str, Any] | None = None,
              **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": aud, "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4())} | claims
        key = self.ec if alg.startswith("ES") else self.rsa
        head = {"kid": "ec-1" if alg.startswith("ES") else "rsa-1", "typ": "JWT"} | (headers or {})
        return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=alg, headers=head)
