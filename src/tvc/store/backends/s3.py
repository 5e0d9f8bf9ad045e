"""A backend in an S3-compatible object store (AWS S3, SeaweedFS, MinIO, …), through boto3.

URL: ``s3://BUCKET[/PREFIX]?endpoint=URL[&region=R]``. Credentials come from boto3's usual
chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, the shared files,
instance roles); nothing secret is ever part of the URL, so a registry's config.toml can be
shared.

Why it looks the way it does:

- **Create-only writes.** Objects are named by their hash and never replaced, so ``put`` sends
  ``If-None-Match: *`` (and so does the completion of a multipart upload): two replicas writing
  one pack at once cannot interleave, and a reader's ranged GETs never straddle two versions of
  an object. A 412 means the name exists: equal bytes (same size and, for a single-part
  object, the same MD5 ETag) are success; anything else under a content-addressed name is a
  damaged copy, replaced by compare-and-swap on its ETag (``If-Match``) so that a repair
  overwrites only the copy it examined.
- **Multipart above** :attr:`S3Backend.multipart_threshold`: parts of
  :attr:`S3Backend.part_size` go up in a few threads; a failed upload is aborted, so no parts
  are left billed and invisible.
- **Ranged GETs**: ``get(name, offset, length)`` asks for exactly those bytes.
- **Retries are ours, not botocore's** (its own are switched off): transient failures (HTTP 5xx,
  throttling, timeouts, dropped connections) are retried with exponential backoff and jitter,
  up to :attr:`S3Backend.attempts` tries; permanent ones (403, missing bucket, bad request)
  raise one :class:`~tvc.errors.StorageError` at once that says which object, which operation
  and what S3 answered. Owning the loop is what makes the count and the message testable.
- **mtime is S3's LastModified**, by the store's clock. gc compares it with its own clock, so
  its grace period (an hour by default) must exceed any skew between hosts and the store.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tvc.errors import StorageError, UsageError
from tvc.store.backends.base import Backend, NotFound, check_name

T = TypeVar("T")

THROTTLE_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "TooManyRequests",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
}


class S3Location:
    """A parsed ``s3://`` store URL."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise UsageError(f"store URL {url!r}: expected s3://BUCKET[/PREFIX]?endpoint=URL")
        self.bucket = parts.netloc
        if not _valid_bucket(self.bucket):
            raise UsageError(f"store URL {url!r}: {self.bucket!r} is not a valid bucket name")
        self.prefix = parts.path.strip("/")
        if self.prefix:
            check_name(self.prefix)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - {"endpoint", "region"}
        if unknown:
            raise UsageError(
                f"store URL {url!r}: unknown option(s) {', '.join(sorted(unknown))} "
                "(known: endpoint, region; credentials come from the AWS environment)"
            )
        self.endpoint = (query.get("endpoint") or [None])[0] or None
        if self.endpoint and not self.endpoint.startswith(("http://", "https://")):
            raise UsageError(f"store URL {url!r}: endpoint must be an http(s):// URL")
        self.region = (query.get("region") or [None])[0] or None

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def _valid_bucket(name: str) -> bool:
    import re

    return bool(re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", name))


class S3Backend(Backend):
    multipart_threshold = 64 * 1024 * 1024
    part_size = 16 * 1024 * 1024  # S3's minimum for every part but the last is 5 MiB
    part_threads = 4
    attempts = 6  # tries per request, the first included
    backoff = 0.2  # seconds before the first retry; doubles, with jitter, up to backoff_max
    backoff_max = 10.0

    def __init__(self, url: str, *, check: bool = False) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise UsageError(
                "the S3 store needs boto3: pip install 'tvc[s3]' (or pip install boto3)"
            ) from exc
        self.loc = S3Location(url)
        self.attempts = int(os.environ.get("TVC_S3_ATTEMPTS", self.attempts))
        config = Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1, "mode": "standard"},  # we retry (module doc)
            connect_timeout=10,
            read_timeout=120,
            max_pool_connections=32,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        self._client = session.client(
            "s3",
            endpoint_url=self.loc.endpoint,
            region_name=self.loc.region or session.region_name or "us-east-1",
            config=config,
        )
        if check:
            self.check_bucket()

    def __repr__(self) -> str:
        return f"S3Backend({self.loc})"

    # -- the retry loop --------------------------------------------------------------------
    def _call(self, what: str, name: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried while the failure is transient; one clear StorageError if not."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            HTTPClientError,
            NoCredentialsError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except ClientError as exc:
                status, code = _status(exc), _code(exc)
                transient = status >= 500 or status == 429 or code in THROTTLE_CODES
                if not transient or attempt == self.attempts:
                    raise self._error(what, name, exc, attempt) from None
            except NoCredentialsError:
                raise StorageError(
                    f"S3 {what} {self.loc}: no AWS credentials found (set AWS_ACCESS_KEY_ID "
                    "and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
                ) from None
            except (BotoConnectionError, HTTPClientError) as exc:  # refused, reset, timeouts
                if attempt == self.attempts:
                    raise StorageError(
                        f"S3 {what} {self._where(name)} failed after {attempt} attempt(s): {exc}"
                    ) from None
            except BotoCoreError as exc:  # a request boto3 would not even send
                raise StorageError(f"S3 {what} {self._where(name)}: {exc}") from None
            time.sleep(min(delay, self.backoff_max) * (0.5 + random.random()))
            delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _where(self, name: str) -> str:
        return f"s3://{self.loc.bucket}/{self.loc.key(name)}" if name else str(self.loc)

    def _error(self, what: str, name: str, exc: Any, attempt: int) -> StorageError:
        err = self._describe(what, name, exc, attempt)
        err.s3_status = _status(exc)  # type: ignore[attr-defined]  # 412/416 handled by callers
        return err

    def _describe(self, what: str, name: str, exc: Any, attempt: int) -> StorageError:
        status, code = _status(exc), _code(exc)
        msg = exc.response.get("Error", {}).get("Message") or ""
        tries = f" after {attempt} attempts" if attempt > 1 else ""
        if code in ("NoSuchKey", "404", "NotFound") and name:
            return NotFound(f"no object {name} in {self.loc}")
        if code == "NoSuchBucket" or (status == 404 and not name):
            return StorageError(
                f"S3 bucket {self.loc.bucket!r} does not exist at "
                f"{self.loc.endpoint or 'AWS'} (create it first)"
            )
        if status == 403:
            return StorageError(
                f"S3 {what} {self._where(name)}: access denied ({code or 403}): check the AWS "
                "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and their "
                "rights on the bucket"
            )
        detail = f"{status} {code}".strip() + (f": {msg}" if msg else "")
        return StorageError(f"S3 {what} {self._where(name)} failed{tries}: {detail}")

    # -- operations ------------------------------------------------------------------------
    def check_bucket(self) -> None:
        """Fail now, clearly, when the bucket is missing or the credentials are refused."""
        self._call("HEAD bucket", "", lambda: self._client.head_bucket(Bucket=self.loc.bucket))

    def _put(self, name: str, data: bytes | Path) -> None:
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        if isinstance(data, Path) and size > self.multipart_threshold:
            created = self._put_multipart(name, data, size)
        else:
            body = data.read_bytes() if isinstance(data, Path) else bytes(data)
            created = self._put_single(name, body)
        if not created:
            self._settle_existing(name, data, size)

    def _put_single(self, name: str, body: bytes, if_match: str | None = None) -> bool:
        """True if stored; False if the name exists already (412 on If-None-Match)."""
        key = self.loc.key(name)
        cond = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()

        def put() -> Any:
            return self._client.put_object(
                Bucket=self.loc.bucket, Key=key, Body=body, ContentMD5=md5, **cond
            )

        try:
            self._call("PUT", name, put)
        except StorageError as exc:
            if getattr(exc, "s3_status", 0) == 412:
                return False
            raise
        return True

    def _put_multipart(self, name: str, path: Path, size: int) -> bool:
        key, bucket = self.loc.key(name), self.loc.bucket
        up = self._call(
            "CreateMultipartUpload",
            name,
            lambda: self._client.create_multipart_upload(Bucket=bucket, Key=key),
        )
        upload_id = up["UploadId"]
        try:
            starts = list(range(0, size, self.part_size))

            def part(i: int) -> dict[str, Any]:
                with open(path, "rb") as f:
                    f.seek(starts[i])
                    body = f.read(self.part_size)
                md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
                got = self._call(
                    f"UploadPart {i + 1}/{len(starts)}",
                    name,
                    lambda: self._client.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=i + 1,
                        Body=body,
                        ContentMD5=md5,
                    ),
                )
                return {"PartNumber": i + 1, "ETag": got["ETag"]}

            with ThreadPoolExecutor(self.part_threads) as pool:
                parts = list(pool.map(part, range(len(starts))))
            try:
                self._call(
                    "CompleteMultipartUpload",
                    name,
                    lambda: self._client.complete_multipart_upload(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                        IfNoneMatch="*",
                    ),
                )
            except StorageError as exc:
                if getattr(exc, "s3_status", 0) == 412:
                    self._abort(key, upload_id)
                    return False
                raise
        except BaseException:
            self._abort(key, upload_id)
            raise
        return True

    def _abort(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(Exception):
            self._client.abort_multipart_upload(Bucket=self.loc.bucket, Key=key, UploadId=upload_id)

    def _settle_existing(self, name: str, data: bytes | Path, size: int) -> None:
        """The name exists (a create-only write was refused). Equal bytes: done. Otherwise the
        stored copy is damaged (names are content hashes): replace exactly that copy."""
        head = self._head(name)
        if head is None:  # deleted meanwhile (gc of an unindexed copy): write it again
            body = data.read_bytes() if isinstance(data, Path) else bytes(data)
            if self._put_single(name, body):
                return
            head = self._head(name)
            if head is None:
                raise StorageError(f"S3 PUT {self._where(name)}: the object keeps changing")
        etag = head["ETag"]
        if head["ContentLength"] == size and ("-" in etag or etag.strip('"') == _md5(data)):
            return
        body = data.read_bytes() if isinstance(data, Path) else bytes(data)
        if not self._put_single(name, body, if_match=etag):
            raise StorageError(f"S3 PUT {self._where(name)}: replaced concurrently; try again")

    def _head(self, name: str) -> dict[str, Any] | None:
        try:
            return self._call(
                "HEAD",
                name,
                lambda: self._client.head_object(Bucket=self.loc.bucket, Key=self.loc.key(name)),
            )
        except NotFound:
            return None

    def _get(self, name: str, offset: int, length: int | None) -> bytes:
        if length == 0:
            head = self._head(name)
            if head is None:
                raise NotFound(f"no object {name} in {self.loc}")
            return b""
        kw: dict[str, Any] = {}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kw["Range"] = f"bytes={offset}-{end}"

        def get() -> bytes:
            resp = self._client.get_object(Bucket=self.loc.bucket, Key=self.loc.key(name), **kw)
            with contextlib.closing(resp["Body"]) as body:
                return body.read()

        try:
            return self._call("GET", name, get)
        except StorageError as exc:
            if getattr(exc, "s3_status", 0) == 416:
                return b""  # the range starts past the end: the caller reports the truncation
            raise

    def _exists(self, name: str) -> bool:
        return self._head(name) is not None

    def _size(self, name: str) -> int:
        head = self._head(name)
        if head is None:
            raise NotFound(f"no object {name} in {self.loc}")
        return int(head["ContentLength"])

    def _mtime(self, name: str) -> float:
        head = self._head(name)
        if head is None:
            raise NotFound(f"no object {name} in {self.loc}")
        return head["LastModified"].timestamp()

    def _list(self, prefix: str) -> Iterator[str]:
        root = self.loc.key("") if self.loc.prefix else ""
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Bucket": self.loc.bucket, "Prefix": root + prefix}
            if token:
                kw["ContinuationToken"] = token
            page = self._call("LIST", prefix, lambda kw=kw: self._client.list_objects_v2(**kw))
            for obj in page.get("Contents", []):
                yield obj["Key"][len(root) :]
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    def _delete(self, name: str) -> None:
        self._call(
            "DELETE",
            name,
            lambda: self._client.delete_object(Bucket=self.loc.bucket, Key=self.loc.key(name)),
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def _status(exc: Any) -> int:
    try:
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    except (TypeError, ValueError):
        return 0


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def _md5(data: bytes | Path) -> str:
    h = hashlib.md5()
    if isinstance(data, Path):
        with open(data, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    else:
        h.update(data)
    return h.hexdigest()
