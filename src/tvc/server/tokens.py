"""Access tokens of a ``tvc server``.

A token is 32 random bytes (``tvc_…``), shown once at creation and stored only as its SHA-256
in the registry's metadata DB (table ``tokens``), beside the token's name, scope, model
patterns, expiry and revocation. A presented token is hashed and compared with every stored
hash in constant time (``hmac.compare_digest``, no early exit), so neither timing nor the file
gives a token away. Scopes nest: ``read`` < ``write`` (push, commit) < ``admin``.

The rows are read at every request, so ``tvc token revoke`` (on the data directory, or through
any replica) takes effect at the next request of every replica sharing the DB, without a
restart. Nothing of it lives in a local file any more: replicas share no disk.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tvc.errors import AccessError, ExistsError, StorageError, UnknownRefError, UsageError
from tvc.repo.schema import tokens as T

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
    """Tokens as rows of the registry's metadata DB (table ``tokens``), shared by every server
    replica on that DB: a token created or revoked through one is honoured or refused by all
    at their next request. No cache: one small query per request (about a millisecond), and a
    revocation never waits for a cache to expire.

    ``source``: the registry's engine, or its ``.tvc`` directory (the CLI on a data dir). A
    ``tokens.json`` left there by an older tvc is imported once and renamed
    ``tokens.json.imported``.
    """

    def __init__(self, source: Path | sa.Engine, regdir: Path | None = None) -> None:
        self._repo = None
        if isinstance(source, sa.Engine):
            self.engine = source
        else:
            from tvc.repo.repository import Repository

            regdir = Path(source)
            self._repo = Repository(regdir.parent)
            self.engine = self._repo.engine
        if regdir is not None:
            self._import_file(Path(regdir) / "tokens.json")

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()

    def _import_file(self, path: Path) -> None:
        """The tokens of the file store of old, once (rows already here are kept)."""
        try:
            rows = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise UsageError(f"{path}: {exc}") from exc
        try:
            tokens = [Token(**row) for row in rows]
        except TypeError as exc:
            raise UsageError(f"{path}: {exc}") from exc
        with self._write() as conn:
            have = set(conn.execute(sa.select(T.c.hash)).scalars())
            live = set(conn.execute(sa.select(T.c.live_name)).scalars())
            for tok in tokens:
                if tok.hash in have:
                    continue
                row = _row(tok)
                if row["live_name"] in live:
                    row["live_name"] = None
                live.add(row["live_name"])
                conn.execute(T.insert().values(**row))
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(path.name + ".imported"))

    @contextlib.contextmanager
    def _write(self):
        from tvc.repo import db

        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{db.WRITE: True})
                with conn.begin():
                    yield conn
        except sa.exc.OperationalError as exc:
            raise StorageError(f"cannot write the token table: {exc.orig}") from exc

    def load(self) -> list[Token]:
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(T).order_by(T.c.created, T.c.name)).all()
        except sa.exc.OperationalError as exc:
            raise StorageError(f"cannot read the token table: {exc.orig}") from exc
        return [
            Token(
                name=r.name,
                scope=r.scope,
                models=json.loads(r.models),
                created=r.created,
                expires=r.expires,
                revoked=r.revoked,
                hash=r.hash,
            )
            for r in rows
        ]

    def create(
        self, name: str, scope: str, models: list[str] = (), expires: str | None = None
    ) -> str:
        """A new token; returns the secret (shown once, never stored)."""
        if not NAME_RE.match(name):
            raise UsageError(f"invalid token name {name!r}")
        if scope not in SCOPES:
            raise UsageError(f"invalid scope {scope!r}: one of {', '.join(SCOPES)}")
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
        try:
            with self._write() as conn:
                conn.execute(T.insert().values(**_row(token)))
        except sa.exc.IntegrityError:
            raise ExistsError(f"a token named {name!r} exists already (revoke it first)") from None
        return secret

    def list(self) -> list[Token]:
        return list(self.load())

    def revoke(self, name: str) -> None:
        with self._write() as conn:
            done = conn.execute(
                T.update().where(T.c.live_name == name).values(revoked=time.time(), live_name=None)
            ).rowcount
        if not done:
            raise UnknownRefError(f"no live token named {name!r}")

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


def _row(token: Token) -> dict[str, Any]:
    return {
        "hash": token.hash,
        "name": token.name,
        "live_name": token.name if token.revoked is None else None,
        "scope": token.scope,
        "models": json.dumps(list(token.models)),
        "created": token.created,
        "expires": token.expires,
        "revoked": token.revoked,
    }
