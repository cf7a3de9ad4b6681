"""The token issuer: key files, kid, rotation, retirement, token claims, and no private material shown."""

from __future__ import annotations

import io
import json
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from joserfc import errors, jwt
from joserfc.jwk import ECKey
from joserfc.jwk import thumbprint as rfc7638_thumbprint
from rich.console import Console

from inferbox.config import Settings
from inferbox.errors import ConfigError
from inferbox.tenants import app
from inferbox.tenants.keys import (
    ALGORITHM,
    AUDIENCE,
    ISSUER,
    PRIVATE_PARAMS,
    KeyringError,
    KeyStore,
    TokenRefused,
    issue_token,
    parse_ttl,
    tenant_issuer,
    verify_token,
)


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "state" / "keys")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def private_d_values(store: KeyStore) -> list[str]:
    """The private scalars in the keyring file, to search outputs for."""
    data = json.loads(store.path.read_text())
    return [k["private"]["d"] for k in data["keys"] if "private" in k]


def test_first_key_is_created_once_with_private_file_modes(store: KeyStore) -> None:
    keys, created = store.ensure()
    assert created and len(keys) == 1 and keys[0].active
    assert mode(store.directory) == 0o700
    assert mode(store.path) == 0o600
    assert store.ensure() == (keys, False)  # idempotent: the key is not replaced
    assert [p.name for p in store.directory.iterdir()] == ["keyring.json"]  # no temp file left behind


def test_kid_is_the_rfc7638_thumbprint(store: KeyStore) -> None:
    store.ensure()
    (public,) = store.jwks()["keys"]
    members = {k: public[k] for k in ("crv", "kty", "x", "y")}  # RFC 7638: the required members only
    assert public["kid"] == rfc7638_thumbprint(members) == store.active_kid()
    assert public["alg"] == ALGORITHM == "ES256" and public["crv"] == "P-256" and public["use"] == "sig"
    key, kid = store.signing_key()
    assert key.as_dict(private=False) | {"kid": kid, "alg": "ES256", "use": "sig"} == public


def test_jwks_holds_no_private_material(store: KeyStore) -> None:
    store.ensure()
    store.rotate()
    for key in store.jwks()["keys"]:
        assert not PRIVATE_PARAMS & key.keys()
    text = store.jwks_json()
    assert '"d"' not in text
    assert all(d not in text for d in private_d_values(store))


def test_rotation_keeps_the_previous_public_key(store: KeyStore) -> None:
    store.ensure()
    old = store.active_kid()
    old_token = issue_token(store, tenant="t", subject="s", ttl_s=600).token
    new = store.rotate()
    assert new.active and new.kid != old
    assert [k.kid for k in store.list_keys()] == [old, new.kid]
    assert {k["kid"] for k in store.jwks()["keys"]} == {old, new.kid}
    # The previous private key is gone: nothing can sign with it any more.
    entries = {k["kid"]: k for k in json.loads(store.path.read_text())["keys"]}
    assert "private" not in entries[old] and "private" in entries[new.kid]
    assert mode(store.path) == 0o600
    # Tokens signed before the rotation still verify; new ones carry the new kid.
    assert verify_token(store, old_token)["sub"] == "s"
    new_token = issue_token(store, tenant="t", subject="s", ttl_s=600)
    assert new_token.kid == new.kid and jwt.decode(new_token.token, store.verification_keys()).header["kid"] == new.kid


def test_retire_removes_the_public_key(store: KeyStore) -> None:
    store.ensure()
    old = store.active_kid()
    old_token = issue_token(store, tenant="t", subject="s", ttl_s=600).token
    store.rotate()
    store.retire(old)
    assert old not in {k["kid"] for k in store.jwks()["keys"]}
    with pytest.raises(errors.InvalidKeyIdError):
        verify_token(store, old_token)


def test_retire_refuses_the_active_and_unknown_keys(store: KeyStore) -> None:
    store.ensure()
    with pytest.raises(KeyringError, match="active signing key"):
        store.retire(store.active_kid())
    with pytest.raises(KeyringError, match="no key 'nope'"):
        store.retire("nope")


def test_missing_or_exposed_keyring_is_refused(store: KeyStore) -> None:
    with pytest.raises(KeyringError, match="invoke keys"):
        store.signing_key()
    store.ensure()
    store.path.chmod(0o644)
    with pytest.raises(KeyringError, match="readable by others"):
        store.jwks()


def test_token_claims_and_header(store: KeyStore) -> None:
    store.ensure()
    before = int(time.time())
    issued = issue_token(store, tenant="tenant-a", subject="iris-web", ttl_s=900, groups=["apps"])
    decoded = jwt.decode(issued.token, store.verification_keys(), algorithms=["ES256"])
    claims = decoded.claims
    assert decoded.header == {"alg": "ES256", "kid": store.active_kid(), "typ": "JWT"}
    assert claims["iss"] == f"{ISSUER}/tenants/tenant-a" == tenant_issuer("tenant-a") and claims["aud"] == AUDIENCE
    assert claims["sub"] == "iris-web" and claims["tenant"] == "tenant-a" and claims["groups"] == ["apps"]
    assert before <= claims["iat"] == claims["nbf"] <= int(time.time())
    assert claims["exp"] - claims["iat"] == 900
    assert verify_token(store, issued.token, tenant="tenant-a") == claims


def test_token_expires(store: KeyStore) -> None:
    store.ensure()
    now = int(time.time())
    token = issue_token(store, tenant="t", subject="s", ttl_s=60, now=now).token
    assert verify_token(store, token, now=now + 59)["sub"] == "s"
    with pytest.raises(TokenRefused, match="expired"):
        verify_token(store, token, now=now + 60)  # no clock skew: stricter than the sidecar's 60 s
    with pytest.raises(TokenRefused, match="not valid before"):
        verify_token(store, token, now=now - 10)


def test_only_es256_is_accepted(store: KeyStore) -> None:
    """A token with another algorithm (even one naming our kid) or another key is refused."""
    store.ensure()
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "s", "tenant": "t", "exp": int(time.time()) + 60}
    other = ECKey.generate_key("P-256")
    token = jwt.encode({"alg": "ES384", "kid": store.active_kid()}, claims, ECKey.generate_key("P-384"),
                       algorithms=["ES384"])
    with pytest.raises(errors.JoseError):
        verify_token(store, token)
    foreign = jwt.encode({"alg": "ES256", "kid": other.thumbprint()}, claims, other, algorithms=["ES256"])
    with pytest.raises(errors.InvalidKeyIdError):
        verify_token(store, foreign)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("2h", 7200), ("900", 900), ("1d", 86400)])
def test_parse_ttl(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "15x", "-5m", "0", "25h", "1.5h", "\uff11\uff15m"])
def test_parse_ttl_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="ttl"):
        parse_ttl(text)


# -- what the tasks print ------------------------------------------------------------------------


def test_no_output_contains_private_key_material(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    out = io.StringIO()
    console = Console(file=out, width=200)
    app.manage_keys(settings, console, show_jwks=True)
    app.manage_keys(settings, console, rotate=True, show_jwks=True)
    store = app.keystore(settings)
    secrets = private_d_values(store)
    issued, _ = app.token_for(settings, tenant="tenant-a", ttl="5m")
    previous = next(k.kid for k in store.list_keys() if not k.active)
    app.manage_keys(settings, console, retire=previous, show_jwks=True)
    text = out.getvalue() + issued.token + json.dumps(issued.claims)
    assert secrets and all(d not in text for d in secrets)
    assert '"d"' not in text and "'d'" not in text
    assert "active (signs tokens)" in text and f"retired {previous}" in text


def test_token_for_defaults_to_an_allowed_subject(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    app.keystore(settings).ensure()
    issued, warning = app.token_for(settings, tenant="tenant-a", ttl="10m")
    assert issued.claims["sub"] == "iris-web" and issued.claims["tenant"] == "tenant-a" and warning is None
    _, warning = app.token_for(settings, tenant="tenant-a", subject="mallory")
    assert warning is not None and "not an allowed caller" in warning
    with pytest.raises(ConfigError, match=re.escape("lists no callers.subjects to default to: pass the caller, "
                                                    "e.g. --subject my-app")):
        app.token_for(settings, tenant="tenant-b")
    with pytest.raises(ConfigError, match="no tenant 'tenant-z'"):
        app.token_for(settings, tenant="tenant-z")
