"""Access tokens of a ``tvc server``.

A token is 32 random bytes (``tvc_…``), shown once at creation and stored only as its SHA-256
in ``.tvc/tokens.json`` of the server's data directory, beside the token's name, scope, model
patterns, expiry and revocation. A presented token is hashed and compared with every stored
hash in constant time (``hmac.compare_digest``, no early exit), so neither timing nor the file
gives a token away. Scopes nest: ``read`` < ``write`` (push, commit) < ``admin``.

The file is read again whenever it changes, so ``tvc token revoke`` on the data directory takes
effect at the next request without a restart. (Several server replicas on one PostgreSQL —
the scale-out issue — would keep these rows in the metadata DB instead.)
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tvc.errors import AccessError, ExistsError, UnknownRefError, UsageError
from tvc.store import durable

SCOPES = ("read", "write", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
PREFIX = "tvc_"


@dataclass
class Token:
    name: str
    scope: str
    models: list[str] = field(default_factory=list)  # fnmatch patterns; empty: every model
    created: float = 0.0
    expires: float | None = None
    revoked: float | None = None
    hash: str = ""

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def may_read(self, model: str) -> bool:
        return not self.models or any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("hash")
        return d


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``15m``, ``3600s`` (or plain seconds) → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text or "")
    if not m:
        raise UsageError(f"invalid duration {text!r}: use e.g. 30d, 12h, 15m")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
    return float(m.group(1)) * unit


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    def __init__(self, regdir: Path) -> None:
        self.path = regdir / "tokens.json"
        self._lock = threading.Lock()
        self._cache: tuple[float, int, list[Token]] | None = None

    def load(self) -> list[Token]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        with self._lock:
            if self._cache and self._cache[:2] == (st.st_mtime, st.st_size):
                return self._cache[2]
            try:
                rows = json.loads(self.path.read_text())
                tokens = [Token(**row) for row in rows]
            except (OSError, ValueError, TypeError) as exc:
                raise UsageError(f"{self.path}: {exc}") from exc
            self._cache = (st.st_mtime, st.st_size, tokens)
            return tokens

    def _save(self, tokens: list[Token]) -> None:
        data = json.dumps([asdict(t) for t in tokens], indent=1).encode()
        durable.write_bytes(self.path, data)
        self.path.chmod(0o600)

    def create(
        self, name: str, scope: str, models: list[str] = (), expires: str | None = None
    ) -> str:
        """A new token; returns the secret (shown once, never stored)."""
        if not NAME_RE.match(name):
            raise UsageError(f"invalid token name {name!r}")
        if scope not in SCOPES:
            raise UsageError(f"invalid scope {scope!r}: one of {', '.join(SCOPES)}")
        tokens = self.load()
        if any(t.name == name and t.revoked is None for t in tokens):
            raise ExistsError(f"a token named {name!r} exists already (revoke it first)")
        secret = PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        token = Token(
            name=name,
            scope=scope,
            models=list(models),
            created=now,
            expires=now + parse_duration(expires) if expires else None,
            hash=_digest(secret),
        )
        self._save([*tokens, token])
        return secret

    def list(self) -> list[Token]:
        return list(self.load())

    def revoke(self, name: str) -> None:
        tokens = self.load()
        live = [t for t in tokens if t.name == name and t.revoked is None]
        if not live:
            raise UnknownRefError(f"no live token named {name!r}")
        for t in live:
            t.revoked = time.time()
        self._save(tokens)

    def authenticate(self, secret: str | None) -> Token:
        """The token ``secret`` stands for; AccessError (401) if it is missing, wrong, expired
        or revoked — one message for all, so a caller learns nothing about which."""
        if not secret:
            raise AccessError("authentication required: send a token (tvc login URL)")
        presented = _digest(secret)
        found = None
        for t in self.load():  # every row compared: the time does not depend on which matched
            if hmac.compare_digest(presented, t.hash):
                found = t
        now = time.time()
        if (
            found is None
            or found.revoked is not None
            or (found.expires is not None and found.expires <= now)
        ):
            raise AccessError("invalid, expired or revoked token")
        return found
