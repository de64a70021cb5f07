"""JWTs signed with keys the tests generate, shaped like the sandbox's and Epic's."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

import cds.hooks

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

    def token(self, aud: str | list[str], *, alg: str = "ES384", lifetime: int = 300,
              headers: dict[str, Any] | None = None, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": aud, "iat": now, "exp": now + lifetime, "jti": str(uuid.uuid4())} | claims
        key = self.ec if alg.startswith("ES") else self.rsa
        head = {"kid": "ec-1" if alg.startswith("ES") else "rsa-1", "typ": "JWT"} | (headers or {})
        return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=alg, headers=head)


SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_KID = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"


def sandbox_jwks(signer: Signer) -> dict[str, Any]:
    """The test EC key published the way the sandbox publishes its own: ES384, its kid, `use: sig`."""
    key = jwt.algorithms.ECAlgorithm.to_jwk(signer.ec.public_key(), as_dict=True)
    return {"keys": [key | {"kid": SANDBOX_KID, "alg": "ES384", "use": "sig"}]}


def sandbox_token(signer: Signer, aud: str, jku: str) -> str:
    """A token shaped exactly like the CDS Hooks sandbox's (its jwt-generator): ES384, kid and jku in the header,
    iss, aud = the endpoint, exp = iat + 300 s, a uuid jti; no sub, no tenant."""
    now = int(time.time())
    payload = {"iss": SANDBOX_ISSUER, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4())}
    return jwt.encode(payload, signer.ec, algorithm="ES384", headers={"typ": "JWT", "kid": SANDBOX_KID, "jku": jku})


def sandbox_issuers(folder: Path, signer: Signer) -> Path:
    """The shipped sandbox issuers file, with the test key pinned in place of the sandbox's public key."""
    shipped = Path(cds.hooks.__file__).with_name("issuers") / "cds-hooks-sandbox.yaml"
    (folder / "cds-hooks-sandbox.yaml").write_text(shipped.read_text())
    (folder / "cds-hooks-sandbox-jwks.json").write_text(json.dumps(sandbox_jwks(signer)))
    return folder / "cds-hooks-sandbox.yaml"
