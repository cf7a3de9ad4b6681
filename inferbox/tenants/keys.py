"""The token issuer: a signing key pair kept outside git, its public JWKS, and short-lived JWTs.

Algorithm: ES256 (ECDSA P-256 with SHA-256), pinned. Istio's sidecars (Envoy's jwt_authn)
verify ES256 and RS256 alike; ES256 is chosen because its keys are small (a JWKS entry of ~200
bytes inline in every RequestAuthentication instead of ~450 for RSA-2048), its tokens are short
(64-byte signatures), a key is generated in microseconds rather than RSA's tens to hundreds of
milliseconds, and P-256 gives ~128-bit security where RSA-2048 gives ~112. The verifier side
only ever accepts ES256, so an ``alg: none`` or HS256 token (the classic algorithm-confusion
attacks) is refused.

Keyring (``.inferbox/keys/keyring.json``, mode 0600 in a 0700 directory; ``.inferbox`` is
git-ignored): the active key's private JWK plus the public JWK of every key still published.
Rotation makes a new active key and keeps the previous one's *public* key, so tokens it signed
stay valid until ``retire``; its private key is dropped at once, since nothing may sign with it
again. The key id (``kid``) is the RFC 7638 thumbprint of the public key.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import stat
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from joserfc import errors, jwt
from joserfc.jwk import ECKey, KeySet

from inferbox.errors import ConfigError, InferboxError
from inferbox.hints import invoke

ALGORITHM = "ES256"
CURVE = "P-256"
# The issuer's base. Each tenant has an issuer of its own, ``<ISSUER>/tenants/<name>``, and a
# tenant's RequestAuthentication and AuthorizationPolicy trust only that one: ``iss`` is a single
# string (jwt_verify_lib refuses any other type), so no token can satisfy two tenants' policies,
# whatever else it claims. A list-valued ``tenant`` claim or ``aud`` could (Istio matches a list
# claim when any element matches), which is why neither carries the binding.
ISSUER = "https://issuer.inferbox.local"
TENANT_ISSUER_PATH = "/tenants/"
# Every tenant's RequestAuthentication accepts this audience.
AUDIENCE = "inferbox-models"
KEYRING_FILE = "keyring.json"
DEFAULT_TTL = "15m"
MAX_TTL_S = 24 * 3600  # "short-lived": a day at most
# The private parts of a JWK (RFC 7518 section 6): none may leave the keyring.
PRIVATE_PARAMS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_TTL = re.compile(r"^(?P<n>[0-9]+)(?P<unit>[smhd]?)$")  # ASCII digits: \d takes any script's
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class KeyringError(InferboxError):
    """The keyring is missing, unsafe or cannot do what was asked."""


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never its private parts."""

    kid: str
    created: str
    active: bool

    @property
    def status(self) -> str:
        return "active (signs tokens)" if self.active else "previous (verifies only, until retired)"


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: dict[str, Any]
    kid: str


def parse_ttl(text: str) -> int:
    """``"15m"``, ``"1h"``, ``"90s"``, ``"900"`` -> seconds (1 s to 24 h)."""
    match = _TTL.match(text.strip())
    if match is None:
        raise ConfigError("--ttl", [("ttl", f"{text!r} is not a duration like 90s, 15m, 2h")])
    seconds = int(match.group("n")) * _UNIT_S[match.group("unit")]
    if not 0 < seconds <= MAX_TTL_S:
        raise ConfigError("--ttl", [("ttl", f"{text!r}: tokens live between 1 s and {MAX_TTL_S // 3600} h")])
    return seconds


def tenant_issuer(tenant: str, base: str = ISSUER) -> str:
    """The issuer of ``tenant``'s tokens: ``https://issuer.inferbox.local/tenants/<tenant>``."""
    return f"{base}{TENANT_ISSUER_PATH}{tenant}"


def public_jwk(key: ECKey, kid: str) -> dict[str, Any]:
    jwk = {**key.as_dict(private=False), "kid": kid, "alg": ALGORITHM, "use": "sig"}
    assert not PRIVATE_PARAMS & jwk.keys(), "a public JWK must carry no private parameter"
    return jwk


def _now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class KeyStore:
    """The keyring in one directory; every change is written atomically (temp file + rename)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / KEYRING_FILE

    @classmethod
    def for_state_dir(cls, state_dir: Path) -> KeyStore:
        return cls(state_dir / "keys")

    # -- reading ----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.is_file()

    def _read(self) -> dict[str, Any]:
        if not self.exists():
            raise KeyringError(f"no signing key in {self.directory}: run `{invoke('keys')}` first")
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            # Like ssh with a private key file others can read: refuse rather than use it.
            raise KeyringError(f"{self.path} is readable by others (mode {mode:04o}): run chmod 600 on it")
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise KeyringError(f"{self.path} is not valid JSON: {exc}") from exc
        if data.get("version") != 1 or not data.get("keys") or "active" not in data:
            raise KeyringError(f"{self.path} is not an inferbox keyring (version 1)")
        return dict(data)

    def list_keys(self) -> list[KeyInfo]:
        data = self._read()
        return [KeyInfo(k["kid"], k["created"], k["kid"] == data["active"]) for k in data["keys"]]

    def active_kid(self) -> str:
        return str(self._read()["active"])

    def signing_key(self) -> tuple[ECKey, str]:
        data = self._read()
        entry = next(k for k in data["keys"] if k["kid"] == data["active"])
        return ECKey.import_key(entry["private"]), str(entry["kid"])

    def jwks(self) -> dict[str, Any]:
        """The public key set: what RequestAuthentication verifies tokens with."""
        return {"keys": [dict(k["public"]) for k in self._read()["keys"]]}

    def jwks_json(self) -> str:
        """The JWKS as the compact, stable JSON string inlined into RequestAuthentication."""
        return json.dumps(self.jwks(), sort_keys=True, separators=(",", ":"))

    def verification_keys(self) -> KeySet:
        return KeySet.import_key_set(self.jwks())  # type: ignore[arg-type]

    # -- changing ---------------------------------------------------------------------------
    def ensure(self) -> tuple[list[KeyInfo], bool]:
        """Create the first key pair unless one exists; (keys, whether one was created)."""
        if self.exists():
            return self.list_keys(), False
        self._write({"version": 1, "algorithm": ALGORITHM, "active": "", "keys": []} | self._new_entry())
        return self.list_keys(), True

    def rotate(self) -> KeyInfo:
        """A new active key; the previous one stays published (public part only) until retired."""
        data = self._read()
        for entry in data["keys"]:
            entry.pop("private", None)
        new = self._new_entry()
        data["keys"].extend(new["keys"])
        data["active"] = new["active"]
        self._write(data)
        return next(k for k in self.list_keys() if k.active)

    def retire(self, kid: str) -> None:
        """Stop publishing a previous key: tokens it signed are refused from the next apply on."""
        data = self._read()
        if kid == data["active"]:
            raise KeyringError(f"{kid} is the active signing key: rotate first (`{invoke('keys --rotate')}`)")
        remaining = [k for k in data["keys"] if k["kid"] != kid]
        if len(remaining) == len(data["keys"]):
            known = ", ".join(k["kid"] for k in data["keys"])
            raise KeyringError(f"no key {kid!r} in the keyring (known: {known})")
        data["keys"] = remaining
        self._write(data)

    @staticmethod
    def _new_entry() -> dict[str, Any]:
        key = ECKey.generate_key(CURVE)
        kid = key.thumbprint()  # RFC 7638, SHA-256
        private = {**key.as_dict(private=True), "kid": kid, "alg": ALGORITHM, "use": "sig"}
        entry = {"kid": kid, "created": _now_iso(), "public": public_jwk(key, kid), "private": private}
        return {"active": kid, "keys": [entry]}

    def _write(self, data: dict[str, Any]) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)  # mkdir's mode is filtered by the umask, and it may have existed
        tmp = self.directory / f".{KEYRING_FILE}.{os.getpid()}.tmp"
        # Created 0600 from the first byte: never a moment where the private key is readable.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise


def token_claims(*, tenant: str, subject: str, ttl_s: int, audience: str = AUDIENCE, issuer: str | None = None,
                 groups: Sequence[str] = (), now: int | None = None) -> dict[str, Any]:
    """The claims of a token for ``subject`` calling ``tenant``'s models; ``issuer`` defaults to the
    tenant's own (``tenant_issuer``)."""
    issued = int(time.time()) if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer or tenant_issuer(tenant), "aud": audience, "sub": subject, "tenant": tenant,
        "iat": issued, "nbf": issued, "exp": issued + ttl_s, "jti": uuid.uuid4().hex,
    }
    if groups:
        claims["groups"] = list(groups)
    return claims


def sign(claims: dict[str, Any], key: ECKey, kid: str, *, header: dict[str, Any] | None = None) -> str:
    return jwt.encode({"alg": ALGORITHM, "kid": kid, "typ": "JWT", **(header or {})}, claims, key,
                      algorithms=[ALGORITHM])


def issue_token(store: KeyStore, *, tenant: str, subject: str, ttl_s: int, audience: str = AUDIENCE,
                groups: Sequence[str] = (), now: int | None = None) -> IssuedToken:
    """A JWT for ``subject`` calling ``tenant``'s models, signed with the active key."""
    key, kid = store.signing_key()
    claims = token_claims(tenant=tenant, subject=subject, audience=audience, ttl_s=ttl_s, groups=groups, now=now)
    return IssuedToken(sign(claims, key, kid), claims, kid)


class TokenRefused(errors.JoseError):
    """A token whose signature holds but whose claims inferbox does not accept."""

    error = "invalid_token"


_TENANT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_UINT64 = 2**64  # jwt_verify_lib reads exp/iat/nbf as uint64 (src/struct_utils.cc GetUInt64)


def _claim_problem(claims: dict[str, Any], tenant: str | None, audience: str, base: str, now: int) -> str | None:
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not issuer.startswith(base + TENANT_ISSUER_PATH):
        return f"iss {issuer!r} is not a tenant issuer of {base}"
    named = issuer.removeprefix(base + TENANT_ISSUER_PATH)
    if not _TENANT_NAME.fullmatch(named):
        return f"iss {issuer!r} does not end in a tenant name"
    if tenant is not None and named != tenant:
        return f"iss {issuer!r} is not tenant {tenant!r}'s issuer"
    if claims.get("tenant") != named:  # also refuses a list, a number or no claim
        return f"tenant claim {claims.get('tenant')!r} is not the string {named!r}"
    if claims.get("aud") != audience:
        return f"aud {claims.get('aud')!r} is not {audience!r}"
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        return "no sub (the caller) claim"
    if "jti" in claims and not isinstance(claims["jti"], str):
        return "jti is not a string"
    groups = claims.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        return "groups is not a list of strings"
    times = {k: claims.get(k) for k in ("exp", "iat", "nbf")}
    if any(type(v) is not int or not 0 <= v < _UINT64 for v in times.values()):  # bool is an int: type()
        return "exp, iat and nbf must all be present, as non-negative integers"
    if times["exp"] - times["iat"] > MAX_TTL_S or times["exp"] - now > MAX_TTL_S:
        return f"lives longer than {MAX_TTL_S // 3600} h (exp {times['exp']}, iat {times['iat']})"
    if now >= times["exp"]:
        return f"expired at {times['exp']} (now {now})"
    if now < times["nbf"]:
        return f"not valid before {times['nbf']} (now {now})"
    return None


def _duplicate_keys(token: str) -> list[str]:
    """Keys a JWT's header or payload names twice: parsers disagree on which one wins."""
    seen: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in items]
        seen.extend(sorted({k for k in keys if keys.count(k) > 1}))
        return dict(items)

    for part in token.split(".")[:2]:
        try:
            json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)), object_pairs_hook=pairs)
        except ValueError:
            continue  # not JSON: the JWT parser reports it
    return seen


def verify_token(store: KeyStore, token: str, *, audience: str = AUDIENCE, issuer: str = ISSUER,
                 tenant: str | None = None, now: int | None = None) -> dict[str, Any]:
    """Check a token as the tenant's sidecar does, or more strictly (README, "Tenants: tokens").

    What the sidecar checks (signature by a published key, ES256 only, ``iss`` = the tenant's
    issuer, ``aud``, ``exp``/``nbf``) is checked here with no clock skew; beyond it, what the
    mesh cannot express is refused here: no ``exp``/``iat``, a lifetime over 24 h, a ``crit``
    header, a ``tenant`` claim other than the string naming the issuer's tenant. ``tenant``,
    when given, must be the token's tenant. Returns the claims; raises a
    ``joserfc.errors.JoseError`` naming what failed.
    """
    decoded = jwt.decode(token, store.verification_keys(), algorithms=[ALGORITHM])
    if duplicates := _duplicate_keys(token):
        raise TokenRefused(f"names {', '.join(duplicates)} twice")
    if "crit" in decoded.header:
        raise TokenRefused(f"crit header {decoded.header['crit']!r}: inferbox understands no extension")
    claims = dict(decoded.claims)
    problem = _claim_problem(claims, tenant, audience, issuer, int(time.time()) if now is None else now)
    if problem is not None:
        raise TokenRefused(problem)
    return claims
