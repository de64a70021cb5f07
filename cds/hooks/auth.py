"""Who may call: the JWT bearer check of CDS Hooks 2.0 (S2 #trusting-cds-clients).

Each trusted issuer is configured with where its keys are: a JWKS URL, a JWKS file, and the
`jku` URLs it may name. A token is accepted only when, in this order: its algorithm is an
asymmetric one (never `none` or HMAC), its `iss` is trusted, its `jku` (if any) is on that
issuer's list — an arbitrary URL is never fetched —, the signature verifies with the key its
`kid` names, `aud` is this endpoint's public URL, `exp`/`iat`/`nbf` hold, its lifetime is
bounded, and its `jti` was not used before. Failures say which check failed, never the token.

Pinned keys win (S2 #trusting-cds-clients lets a service that knows an issuer's keys ignore `jku`):
for an issuer with `jwks_file` or `jwks_url`, a `jku` header that is not on its list is ignored and
never fetched. The CDS Hooks sandbox puts `jku` on every token, so refusing it would lock it out.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cds.content.files import load_model
from cds.errors import HipflexError
from cds.hooks.ehrprofile import EhrProfile

ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
JWKS_REFRESH_SECONDS = 60.0
JWKS_MAX_BYTES = 200_000


class AuthError(HipflexError):
    """A refused token. `check` names the failed check (for logs and metrics), the message says it in words;
    `issuer` and `kid` are what the token claimed, when it got that far. None of it is secret."""

    def __init__(self, check: str, message: str, *, issuer: str | None = None, kid: str | None = None) -> None:
        super().__init__(message)
        self.check, self.issuer, self.kid = check, issuer, kid

    def about(self, issuer: str | None, kid: str | None) -> AuthError:
        self.issuer, self.kid = self.issuer or issuer, self.kid or kid
        return self


PUBLIC_KEY_TENANT = "(public signing key: no tenant)"


class TrustedIssuer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    iss: str = Field(min_length=1, description="The `iss` claim this client signs with")
    jwks_url: str | None = Field(default=None, pattern=r"^https?://", description="Its JWK Set, fetched and cached")
    jwks_file: Path | None = Field(default=None, description="Its JWK Set, exchanged out of band")
    jku: list[str] = Field(default_factory=list, description="`jku` header values honoured for this issuer")
    fhir_servers: list[str] = Field(default_factory=list,
                                    description="fhirServer base URLs this issuer's calls may name (read with the "
                                                "caller's token); none listed = none read")
    profile: EhrProfile = Field(default_factory=EhrProfile, description="What this EHR can take (hooks, card "
                                                                        "length, links, error format, JWTs)")
    public_signing_key: bool = Field(default=False,
                                     description="Its private signing key is published (the CDS Hooks sandbox): "
                                                 "anyone can sign as it, so the service then listens on loopback "
                                                 "only and no claim of its tokens binds a tenant")

    @model_validator(mode="after")
    def _has_keys(self) -> TrustedIssuer:
        if not (self.jwks_url or self.jwks_file or self.jku):
            raise ValueError("a trusted issuer needs jwks_url, jwks_file or jku")
        return self


class IssuerFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    issuers: list[TrustedIssuer] = Field(min_length=1)


def load_issuers(path: Path) -> list[TrustedIssuer]:
    """The trusted issuers file (relative JWKS files are beside it); a mistake stops start-up naming file and line."""
    model, _ = load_model(path, IssuerFile)
    return [i.model_copy(update={"jwks_file": path.parent / i.jwks_file}) if i.jwks_file else i for i in model.issuers]


@dataclass(frozen=True)
class VerifiedClient:
    """What a verified token says about the caller; safe to log."""

    issuer: str
    jti: str
    tenant: str | None
    fhir_servers: tuple[str, ...] = ()
    profile: EhrProfile = field(default_factory=EhrProfile)


class KeySets:
    """JWK Sets by URL or file, cached; refetched on an unknown `kid` at most once a minute."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.cache: dict[str, tuple[float, dict[str, tuple[jwt.PyJWK, str | None]]]] = {}
        self.lock = threading.Lock()

    def key(self, where: str, kid: str) -> tuple[jwt.PyJWK, str | None]:
        """The key named `kid`, and the algorithm its JWK was published for (None when it names none)."""
        with self.lock:
            fetched_at, keys = self.cache.get(where, (0.0, {}))
            if kid not in keys and time.monotonic() - fetched_at > JWKS_REFRESH_SECONDS:
                keys = self._load(where)
                self.cache[where] = (time.monotonic(), keys)
        if kid not in keys:
            raise AuthError("unknown-kid", f"no key with kid {kid!r} in the issuer's key set")
        return keys[kid]

    def _load(self, where: str) -> dict[str, tuple[jwt.PyJWK, str | None]]:
        try:
            if where.startswith(("http://", "https://")):
                response = self.http.get(where, headers={"Accept": "application/json"})
                response.raise_for_status()
                if len(response.content) > JWKS_MAX_BYTES:
                    raise AuthError("keyset-unavailable", "the issuer's key set is too large")
                data = response.json()
            else:
                data = json.loads(Path(where).read_text())
            return {str(k["kid"]): (jwt.PyJWK(k), k.get("alg")) for k in data["keys"]
                    if isinstance(k, dict) and "kid" in k}
        except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError, jwt.PyJWKError):
            raise AuthError("keyset-unavailable", "the issuer's key set could not be loaded") from None


class Authenticator:
    """Checks `Authorization: Bearer <JWT>` for one endpoint URL (the `aud`)."""

    def __init__(self, issuers: list[TrustedIssuer], first_use: Callable[[str, str, int], bool], *,
                 leeway_seconds: int = 30, max_lifetime_seconds: int = 3600, http: httpx.Client | None = None) -> None:
        self.issuers = {i.iss: i for i in issuers}
        self.first_use = first_use
        self.leeway, self.max_lifetime = leeway_seconds, max_lifetime_seconds
        self.keys = KeySets(http or httpx.Client(timeout=5.0, follow_redirects=False, trust_env=False))

    def verify(self, authorization: str | None, audience: str) -> VerifiedClient:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("no-bearer", "an 'Authorization: Bearer <JWT>' header is required")
        token = token.strip()
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("not-a-jwt", "the bearer token is not a JWT") from None
        claimed, kid = str(claims.get("iss"))[:200], str(header.get("kid"))[:200]
        try:
            issuer = self._issuer(header, claims)
            key, published = self.keys.key(self._key_source(issuer, header), str(header.get("kid")))
            if published is not None and published != header["alg"]:
                raise AuthError("algorithm", f"the key is published for {published}, not {header['alg']}")
            allowed = issuer.profile.algorithms
            if allowed is not None and header["alg"] not in allowed:
                raise AuthError("algorithm", f"this issuer signs with {', '.join(allowed)}, not {header['alg']}")
            payload = self._decode(token, key, header["alg"], issuer.iss, audience,
                                   issuer.profile.max_lifetime_seconds or self.max_lifetime)
            jti = str(payload["jti"])
            if not self.first_use(issuer.iss, jti, int(payload["exp"])):
                raise AuthError("replayed", "this token was used before (jti replay)")
        except AuthError as exc:
            raise exc.about(claimed, kid) from None
        # a tenant claim anyone can forge binds nothing: all callers of a public-key issuer share one tenant
        tenant = PUBLIC_KEY_TENANT if issuer.public_signing_key else payload.get("tenant")
        return VerifiedClient(issuer=issuer.iss, jti=jti, tenant=tenant, fhir_servers=tuple(issuer.fhir_servers),
                      profile=issuer.profile)

    def _issuer(self, header: dict[str, Any], claims: dict[str, Any]) -> TrustedIssuer:
        if header.get("alg") not in ALGORITHMS:
            raise AuthError("algorithm", f"algorithm {header.get('alg')!r} is not accepted; use ES384 or RS384")
        if header.get("typ", "JWT") != "JWT":
            raise AuthError("typ", "the JWT header typ must be 'JWT'")
        if not header.get("kid"):
            raise AuthError("no-kid", "the JWT header has no kid")
        issuer = self.issuers.get(str(claims.get("iss")))
        if issuer is None:
            raise AuthError("unknown-issuer", "the token's issuer is not trusted by this service")
        return issuer

    @staticmethod
    def _key_source(issuer: TrustedIssuer, header: dict[str, Any]) -> str:
        """Where the token's key is: an allow-listed `jku`, else the issuer's pinned key set (an unlisted `jku` is
        then ignored, never fetched), else nowhere."""
        jku = header.get("jku")
        if jku is not None and jku in issuer.jku:
            return str(jku)
        if issuer.jwks_file:
            return str(issuer.jwks_file)
        if issuer.jwks_url:
            return issuer.jwks_url
        if jku is not None:
            raise AuthError("jku-not-allowed", "the JWT header's jku is not on this issuer's allow-list")
        raise AuthError("no-keys", "this issuer's keys are known only through jku, and the token has none")

    def _decode(self, token: str, key: jwt.PyJWK, alg: str, iss: str, audience: str,
                max_lifetime: int) -> dict[str, Any]:
        try:
            payload: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=[alg], audience=[audience, audience + "/"], issuer=iss,
                leeway=self.leeway, options={"require": ["iss", "aud", "exp", "iat", "jti"]})
        except jwt.InvalidAudienceError:
            named = jwt.decode(token, options={"verify_signature": False}).get("aud")
            raise AuthError("audience", f"the token's aud is {str(named)[:200]!r}; it must be this endpoint's URL, "
                            f"{audience} (HIPFLEX_PUBLIC_URL plus the path; localhost and 127.0.0.1 differ)") from None
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("not-yet-valid", "the token is not valid yet (iat or nbf in the future)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("missing-claim", f"the token has no {exc.claim} claim") from None
        except jwt.InvalidSignatureError:
            raise AuthError("signature", "the token's signature does not verify") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise AuthError("invalid", "the token could not be verified") from None
        for claim in ("exp", "iat", "nbf"):
            if claim in payload and (isinstance(payload[claim], bool) or not isinstance(payload[claim], int | float)):
                raise AuthError("invalid", f"the {claim} claim must be a number (NumericDate)")
        for claim, required in (("jti", True), ("tenant", False)):
            if claim in payload or required:
                _check_text_claim(claim, payload[claim])
        if int(payload["exp"]) - int(payload["iat"]) > max_lifetime:
            raise AuthError("lifetime", f"the token lives longer than {max_lifetime} s")
        return payload


CLAIM_TEXT = re.compile(r"[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?")


def _check_text_claim(name: str, value: Any) -> None:
    """`jti` and `tenant` are stored and compared as keys: printable ASCII, 1 to 255 characters, no padding (a NUL
    or an object there once reached the database as a 500)."""
    if not isinstance(value, str) or not CLAIM_TEXT.fullmatch(value):
        raise AuthError("invalid", f"the {name} claim must be a string of 1 to 255 printable ASCII characters")
