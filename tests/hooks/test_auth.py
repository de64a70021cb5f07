"""JWT checks (S2 #trusting-cds-clients), each failure case against a real signed token."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml

import cds.hooks
from cds.content.files import ContentError
from cds.hooks.auth import PUBLIC_KEY_TENANT, Authenticator, AuthError, TrustedIssuer, load_issuers
from cds.hooks.store import Store
from tests.support.servers import FhirStub
from tests.support.signing import ISSUER, SANDBOX_ISSUER, SANDBOX_KID, Signer, sandbox_issuers, sandbox_token

AUD = "https://cds.example.org/cds-services/hipflex-patient-view"


@pytest.fixture
def auth(issuers_file: Path, store: Store) -> Authenticator:
    return Authenticator(load_issuers(issuers_file), store.first_use_of_token, max_lifetime_seconds=3600)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], key: bytes = b"") -> str:
    """A token built by hand: `alg: none`, or HMAC with a key an attacker could know."""
    head_body = f"{b64(header)}.{b64(claims)}"
    signature = b""
    if header["alg"] == "HS256":
        signature = hmac.new(key, head_body.encode(), hashlib.sha256).digest()
    return f"{head_body}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUD, "iat": now, "exp": now + 300, "jti": "j-" + str(now)} | extra


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_a_token_signed_with_the_issuers_key_is_accepted(auth: Authenticator, signer: Signer, alg: str) -> None:
    client = auth.verify("Bearer " + signer.token(AUD, alg=alg, tenant="clinic-1"), AUD)
    assert (client.issuer, client.tenant) == (ISSUER, "clinic-1")


def test_epic_style_extra_claims_and_an_audience_list_are_accepted(auth: Authenticator, signer: Signer) -> None:
    token = signer.token([AUD, "https://other.example"], alg="RS384", sub="client-id", nbf=int(time.time()) - 300)
    assert auth.verify(f"Bearer {token}", AUD).issuer == ISSUER


@pytest.mark.parametrize(("make", "reason"), [
    (lambda s: s.token(AUD, lifetime=-600, iat=int(time.time()) - 900), "expired"),
    (lambda s: s.token(AUD, iat=int(time.time()) + 600, lifetime=900), "not valid yet"),
    (lambda s: s.token("https://cds.example.org/cds-services"), "it must be this endpoint"),
    (lambda s: s.token(AUD, iss="https://attacker.example"), "issuer is not trusted"),
    (lambda s: s.token(AUD, headers={"kid": "nope"}), "no key with kid 'nope'"),
    (lambda s: s.token(AUD, alg="ES384", headers={"kid": "rsa-1"}), "could not be verified"),
    (lambda s: s.token(AUD, lifetime=7200), "lives longer than 3600"),
    (lambda s: s.token(AUD, jti=None), "no jti claim"),
    (lambda s: s.token(AUD, headers={"typ": "at+jwt"}), "typ must be 'JWT'"),
    (lambda s: s.token(AUD)[:-6] + "AAAAAA", "signature does not verify"),
])
def test_each_failed_check_is_named(auth: Authenticator, signer: Signer, make: Any, reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        auth.verify("Bearer " + make(signer), AUD)


def test_alg_none_is_refused(auth: Authenticator) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": "ec-1"}, claims())
    with pytest.raises(AuthError, match="algorithm 'none' is not accepted"):
        auth.verify(f"Bearer {token}", AUD)


def test_hmac_signed_with_the_public_key_is_refused(auth: Authenticator, signer: Signer) -> None:
    """The RS/HS confusion attack: HS256 keyed with the issuer's public key must not verify."""
    public = json.dumps(signer.jwks()["keys"][1]).encode()
    token = unsigned({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(), key=public)
    with pytest.raises(AuthError, match="algorithm 'HS256' is not accepted"):
        auth.verify(f"Bearer {token}", AUD)


def test_a_replayed_token_is_refused(auth: Authenticator, signer: Signer) -> None:
    token = signer.token(AUD)
    auth.verify(f"Bearer {token}", AUD)
    with pytest.raises(AuthError, match="used before"):
        auth.verify(f"Bearer {token}", AUD)


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwYXNz", "Bearer not-a-jwt"])
def test_missing_or_malformed_headers_are_refused(auth: Authenticator, header: str | None) -> None:
    with pytest.raises(AuthError):
        auth.verify(header, AUD)


def test_jku_is_fetched_only_when_allow_listed(fhir_stub: FhirStub, signer: Signer, store: Store) -> None:
    allowed = f"{fhir_stub.base}/jwks.json"
    fhir_stub.serve("jwks.json", signer.jwks())
    auth = Authenticator([TrustedIssuer(iss=ISSUER, jku=[allowed])], store.first_use_of_token)
    assert auth.verify("Bearer " + signer.token(AUD, headers={"jku": allowed}), AUD).issuer == ISSUER
    foreign = f"{fhir_stub.base}/attacker-jwks.json"
    with pytest.raises(AuthError, match="jku is not on this issuer's allow-list"):
        auth.verify("Bearer " + signer.token(AUD, headers={"jku": foreign}), AUD)
    assert fhir_stub.paths() == ["jwks.json"]


def test_jwks_url_is_fetched_once_and_cached(fhir_stub: FhirStub, signer: Signer, store: Store) -> None:
    fhir_stub.serve("keys", signer.jwks())
    auth = Authenticator([TrustedIssuer(iss=ISSUER, jwks_url=f"{fhir_stub.base}/keys")], store.first_use_of_token)
    for _ in range(3):
        auth.verify("Bearer " + signer.token(AUD), AUD)
    assert fhir_stub.paths() == ["keys"]


def test_an_unreachable_key_set_is_a_refusal_not_a_crash(store: Store, signer: Signer, fhir_stub: FhirStub) -> None:
    auth = Authenticator([TrustedIssuer(iss=ISSUER, jwks_url=f"{fhir_stub.base}/missing")], store.first_use_of_token)
    with pytest.raises(AuthError, match="key set could not be loaded"):
        auth.verify("Bearer " + signer.token(AUD), AUD)


def test_a_relative_jwks_file_is_read_beside_the_issuers_file(tmp_path: Path) -> None:
    path = tmp_path / "issuers.yaml"
    path.write_text(yaml.safe_dump({"issuers": [{"iss": ISSUER, "jwks_file": "client.json"}]}))
    assert load_issuers(path)[0].jwks_file == tmp_path / "client.json"


def test_a_broken_issuers_file_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "issuers.yaml"
    path.write_text(yaml.safe_dump({"issuers": [{"iss": ISSUER, "jwks_file": "k.json"}, {"iss": "x"}]}))
    with pytest.raises(ContentError, match=r"issuers\.yaml:4: .*jwks_url, jwks_file or jku"):
        load_issuers(path)


def test_the_shipped_sandbox_issuers_file_pins_the_sandbox_public_key() -> None:
    [issuer] = load_issuers(Path(cds.hooks.__file__).with_name("issuers") / "cds-hooks-sandbox.yaml")
    assert issuer.iss == SANDBOX_ISSUER
    assert issuer.jku == []  # the jku header is ignored, never fetched
    assert issuer.jwks_file is not None
    [key] = json.loads(issuer.jwks_file.read_text())["keys"]
    assert (key["kid"], key["kty"], key["crv"], key["alg"]) == (SANDBOX_KID, "EC", "P-384", "ES384")


def test_a_sandbox_shaped_token_is_accepted_and_its_jku_never_fetched(tmp_path: Path, signer: Signer, store: Store,
                                                                       fhir_stub: FhirStub) -> None:
    auth = Authenticator(load_issuers(sandbox_issuers(tmp_path, signer)), store.first_use_of_token)
    jku = f"{fhir_stub.base}/.well-known/jwks.json"  # a listener: any request to it fails the test below
    fhir_stub.serve(".well-known/jwks.json", {"keys": []})
    client = auth.verify("Bearer " + sandbox_token(signer, AUD, jku), AUD)
    assert (client.issuer, client.tenant) == (SANDBOX_ISSUER, PUBLIC_KEY_TENANT)
    assert fhir_stub.seen == []


def test_the_sandbox_is_marked_as_signing_with_a_published_key_and_its_tenant_claim_binds_nothing(
        tmp_path: Path, signer: Signer, store: Store) -> None:
    """Anyone can sign as the sandbox (its private key is public), so a forged `tenant` must not let a client land
    feedback on another sandbox caller's tenant: every client of such an issuer gets the same fixed tenant."""
    [issuer] = load_issuers(Path(cds.hooks.__file__).with_name("issuers") / "cds-hooks-sandbox.yaml")
    assert issuer.public_signing_key
    auth = Authenticator(load_issuers(sandbox_issuers(tmp_path, signer)), store.first_use_of_token)
    now = int(time.time())
    forged = jwt.encode({"iss": SANDBOX_ISSUER, "aud": AUD, "exp": now + 300, "iat": now, "jti": "forged-1",
                         "tenant": "clinic-of-someone-else"}, signer.ec, algorithm="ES384",
                        headers={"kid": SANDBOX_KID})
    assert auth.verify("Bearer " + forged, AUD).tenant == PUBLIC_KEY_TENANT


def test_an_unlisted_jku_is_refused_only_for_an_issuer_without_pinned_keys(signer: Signer, store: Store,
                                                                            fhir_stub: FhirStub) -> None:
    listed = f"{fhir_stub.base}/jwks.json"
    auth = Authenticator([TrustedIssuer(iss=ISSUER, jku=[listed])], store.first_use_of_token)
    with pytest.raises(AuthError) as refused:
        auth.verify("Bearer " + signer.token(AUD, headers={"jku": "https://attacker.example/jwks.json"}), AUD)
    assert (refused.value.check, refused.value.issuer, refused.value.kid) == ("jku-not-allowed", ISSUER, "ec-1")
    assert fhir_stub.seen == []


@pytest.mark.parametrize(("make", "check"), [
    (lambda s: s.token(AUD, lifetime=-600, iat=int(time.time()) - 900), "expired"),
    (lambda s: s.token("https://cds.example.org/cds-services"), "audience"),
    (lambda s: s.token(AUD, iss="https://attacker.example"), "unknown-issuer"),
    (lambda s: s.token(AUD, headers={"kid": "nope"}), "unknown-kid"),
    (lambda s: s.token(AUD)[:-6] + "AAAAAA", "signature"),
])
def test_each_refusal_carries_the_name_of_its_check(auth: Authenticator, signer: Signer, make: Any,
                                                    check: str) -> None:
    with pytest.raises(AuthError) as refused:
        auth.verify("Bearer " + make(signer), AUD)
    assert refused.value.check == check
    assert refused.value.kid is not None


def test_a_key_published_for_one_algorithm_refuses_another(tmp_path: Path, signer: Signer, store: Store) -> None:
    rsa = signer.jwks()["keys"][1] | {"alg": "RS384"}
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [rsa]}))
    auth = Authenticator([TrustedIssuer(iss=ISSUER, jwks_file=tmp_path / "jwks.json")], store.first_use_of_token)
    assert auth.verify("Bearer " + signer.token(AUD, alg="RS384"), AUD).issuer == ISSUER
    with pytest.raises(AuthError, match="published for RS384, not PS384") as refused:
        auth.verify("Bearer " + signer.token(AUD, alg="PS384"), AUD)
    assert refused.value.check == "algorithm"


@pytest.mark.parametrize(("claims_", "reason"), [
    ({"exp": str(int(time.time()) + 300)}, "exp claim must be a number"),
    ({"iat": str(int(time.time()))}, "iat claim must be a number"),
    ({"nbf": True}, "nbf claim must be a number"),
    ({"jti": ""}, "jti claim must be a string of 1 to 255"),
    ({"jti": "   "}, "jti claim must be a string of 1 to 255"),
    ({"jti": "j" * 256}, "1 to 255 printable"),
])
def test_dates_must_be_numbers_and_jti_a_usable_string(auth: Authenticator, signer: Signer, claims_: dict[str, Any],
                                                        reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        auth.verify("Bearer " + signer.token(AUD, **claims_), AUD)
