"""Who is looking: a token in server mode, the local user in ``tvc ui``.

Server mode. The browser logs in with a tvc token (the login form); the token goes into a
cookie that scripts cannot read (HttpOnly), that no other site's page can make the browser send
(SameSite=Strict) and that is checked again on every request, so ``tvc token revoke`` ends a
session at once. A POST made with that cookie must also carry the form's CSRF value, an HMAC of
the token under a key this process made at start, and an ``Origin`` (when the browser sends one)
of this very host. A client sending ``Authorization: Bearer`` instead needs neither: no browser
attaches that header on its own.

``tvc ui``. No login: the person who started it on loopback may read and write, recorded under
their author name. POSTs still need the CSRF value, so a page elsewhere cannot act through it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

from tvc import errors

COOKIE = "tvc_ui"


SCOPES = ("read", "write", "admin")


Forbidden = errors.ForbiddenError  # logged in, but the token's scope is too small: HTTP 403


@dataclass(frozen=True)
class LocalUser:
    """``tvc ui``'s user: what a server token is (name, scope, models, hash), for one person."""

    name: str
    hash: str
    scope: str = "write"

    def allows(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)

    def may_read(self, model: str) -> bool:
        return True


@dataclass(frozen=True)
class Viewer:
    token: Any  # a server token (tvc.server.tokens.Token) or a LocalUser
    by_cookie: bool  # the browser's session: POSTs need the CSRF value

    @property
    def name(self) -> str:
        return self.token.name

    @property
    def can_write(self) -> bool:
        return self.token.allows("write")

    def may_read(self, model: str) -> bool:
        return self.token.may_read(model)

    def readable(self, model: str) -> None:
        """A model this viewer may not read does not exist (404), as for any unknown model."""
        if not self.token.may_read(model):
            raise errors.UnknownRefError(f"unknown model {model!r}")


class Auth:
    """Server mode: tokens from the server's token store (``tvc.server.tokens.TokenStore``:
    ``authenticate(secret)`` → a token, or AccessError)."""

    login = True

    def __init__(self, tokens: Any) -> None:
        self.tokens = tokens
        self.key = secrets.token_bytes(32)

    def viewer(self, request: Request) -> Viewer:
        header = request.headers.get("authorization")
        if header and header.lower().startswith("bearer "):
            return Viewer(self.tokens.authenticate(header[7:].strip()), by_cookie=False)
        return Viewer(self.tokens.authenticate(request.cookies.get(COOKIE)), by_cookie=True)

    def csrf(self, viewer: Viewer) -> str:
        return hmac.new(self.key, viewer.token.hash.encode(), hashlib.sha256).hexdigest()

    def check_post(self, request: Request, viewer: Viewer, form: dict[str, str]) -> None:
        """A cookie-authenticated POST must come from one of our own pages."""
        if not viewer.by_cookie:
            return
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
            raise Forbidden("cross-site request refused (Origin is not this server)")
        if not hmac.compare_digest(form.get("csrf", ""), self.csrf(viewer)):
            raise Forbidden("the form is stale or was not made by this server: reload the page")


class LocalAuth(Auth):
    """``tvc ui``: the local user, who may write."""

    login = False

    def __init__(self, name: str, hosts: tuple[str, ...] = ()) -> None:
        self.key = secrets.token_bytes(32)
        self.user = LocalUser(name=name, hash=secrets.token_hex(16))
        self.hosts = {"127.0.0.1", "localhost", "::1", *hosts}

    def viewer(self, request: Request) -> Viewer:
        # DNS rebinding: a page of another site whose name now resolves to 127.0.0.1 would be
        # "same origin" with us; it still sends its own name as Host, which we refuse.
        host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
        if host not in self.hosts:
            raise Forbidden(f"unexpected Host {host!r}: open the UI by its loopback address")
        return Viewer(self.user, by_cookie=True)
