"""The one error hierarchy of tvc.

Every error carries its own exit code so the CLI can map failures to distinct codes without a
table of its own. User errors (bad input, unknown refs) are distinct from integrity errors (the
store does not hold what it promised) and from environment errors (locks, disks). Nothing in tvc
raises a bare ``Exception`` for a condition the user can cause.
"""

from __future__ import annotations


class TvcError(Exception):
    """Base of every error tvc raises on purpose."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(TvcError):
    """The command line or API call itself is wrong (bad option value, bad name)."""

    exit_code = 2


class NotARegistryError(TvcError):
    """No registry at the given path (and none above the working directory)."""

    exit_code = 3


class RefError(TvcError):
    """A reference names nothing, or more than one thing."""

    exit_code = 4


class UnknownRefError(RefError):
    """A model, version, branch, tag or alias that does not exist."""


class AmbiguousRefError(RefError):
    """A reference that matches several things; the message lists the candidates."""


class ExistsError(TvcError):
    """Creating something that already exists (a registry, branch, tag, destination file)."""

    exit_code = 5


class FormatError(TvcError):
    """A file claims a format (safetensors, GGUF, torch zip) but its bytes break that format.

    Raised before anything is stored: a malformed or hostile header never reaches the store.
    """

    exit_code = 6


class UnsafePickleError(FormatError):
    """A pickle-based file imports callables outside the allow-list."""


class PathError(TvcError):
    """A path escapes the committed directory (``..``, absolute, symlink out), or is missing."""

    exit_code = 7


class IntegrityError(TvcError):
    """Stored bytes do not hash to their name: corruption, truncation or tampering."""

    exit_code = 8


class LockTimeoutError(TvcError):
    """Another writer holds the registry lock for longer than we were willing to wait."""

    exit_code = 9


class StorageError(TvcError):
    """The backend failed (disk full, permission, network) — not a problem with the data."""

    exit_code = 10


class ConflictError(TvcError):
    """Cannot proceed as asked: illegal transition, failed gate, merge conflict."""

    exit_code = 11


class AccessError(TvcError):
    """A server refused the request: no token, a wrong, expired or revoked one, or a scope too
    small for what was asked (the message says which)."""

    exit_code = 12


class ForbiddenError(AccessError):
    """A valid token whose scope is too small, or a request the server will not take from it
    (a cross-site form, a foreign Host): HTTP 403, where other AccessErrors are 401."""


class InferenceInputError(UsageError):
    """An inference request that does not fit the model served: a malformed body, an unknown
    input, a datatype or shape the model does not take (HTTP 400, the OIP error body)."""


class ModelLoadError(TvcError):
    """A committed model cannot be served: no flavor fits its files, a file refused (an
    unscanned pickle, untrusted types), or its runtime failed to load or warm it."""

    exit_code = 13


# The HTTP status each error answers with, most specific class first: one table for every
# tvc endpoint (the registry API, the web UI, the Hugging Face endpoint's defaults).
HTTP_STATUS: tuple[tuple[type[TvcError], int], ...] = (
    (ForbiddenError, 403),
    (AccessError, 401),
    (RefError, 404),
    (UsageError, 400),
    (ExistsError, 409),
    (ConflictError, 409),
    (FormatError, 422),
    (IntegrityError, 422),
    (LockTimeoutError, 503),
    (StorageError, 503),
)


def http_status(exc: TvcError) -> int:
    """The HTTP status of ``exc`` (500 for a class the table does not name)."""
    return next((code for cls, code in HTTP_STATUS if isinstance(exc, cls)), 500)


def http_error(exc: TvcError) -> tuple[int, dict[str, object], dict[str, str]]:
    """``(status, body, headers)`` of ``exc`` as every tvc JSON endpoint answers it: the body
    ``{"error": message, "exit_code": n}`` lets a client raise the class the CLI would."""
    status = http_status(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return status, {"error": exc.message, "exit_code": exc.exit_code}, headers
