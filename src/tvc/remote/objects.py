"""Objects on the move: which ones a registry lacks, packs of exactly those, and a receiver that
verifies a pack whole before it indexes any of it.

Vocabulary
- *object*: a pack entry — a file chunk, a manifest or a version record — named by the BLAKE3
  of its raw bytes. Objects travel **as stored**: a delta entry keeps its codec and its base,
  and its base travels too only when the receiver lacks it.
- *transfer pack*: a pack (format v2, trailer included) of the objects one side sends, at most
  :data:`PACK_LIMIT` bytes, named by the BLAKE3 of its bytes like every pack.

The receiver trusts nothing it is sent: the pack must hash to its name, parse as a pack, hold
only entries that decode to their ids (a delta's base from the same pack or from the receiver's
own verified store), and, when the receiver asked for ids, only those. Only then is the file
moved into the store and indexed, in one transaction; anything wrong leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from tvc.errors import ConflictError, IntegrityError, UsageError
from tvc.repo.manifest import Manifest
from tvc.repo.version import parse_version_record
from tvc.store import durable, hashing
from tvc.store import index as idx
from tvc.store.chunkstore import (
    LEASE_SECONDS,
    MAX_DELTA_DEPTH,
    ChunkInfo,
    ChunkStore,
    entry_row,
)
from tvc.store.packs import ENTRY, Kind, PackWriter, iter_entries, pack_object_name

PACK_LIMIT = 64 * 1024 * 1024  # bytes of payload per transfer pack (the last entry may pass it)
# The end of every refusal that sending the objects again cures (a gc on the receiving side
# swept them between its "I have these" and the record): a pushing client retries on it.
RESEND = "send them and try again"
MAX_PACK_BYTES = PACK_LIMIT + 64 * 1024 * 1024  # what a receiver accepts at most
MAX_RAW = 1 << 30  # no object decodes to more than this (pieces are 4 MiB; manifests < 1 GiB)
BATCH = 5000  # ids per "which do you lack" question
ID_RE = re.compile(r"^[0-9a-f]{64}$")


def check_ids(ids: Iterable[str]) -> list[str]:
    """Object ids from the other side: 64 lowercase hex digits each, or a UsageError."""
    out = list(ids)
    for i in out:
        if not isinstance(i, str) or not ID_RE.match(i):
            raise UsageError(f"invalid object id {str(i)[:80]!r}")
    return out


def check_pack_name(name: str) -> str:
    if not isinstance(name, str) or not ID_RE.match(name):
        raise IntegrityError(f"invalid pack name {str(name)[:80]!r}: expected 64 hex digits")
    return name


# Where an object is stored, with what it needs to travel as stored: the chunk store's row.
ObjectRow = ChunkInfo


def object_rows(engine: sa.Engine, ids: Iterable[str]) -> dict[str, ObjectRow]:
    c = idx.chunks.c
    q = ChunkStore.info_query()
    wanted = list(dict.fromkeys(ids))
    out: dict[str, ObjectRow] = {}
    with engine.connect() as conn:
        for i in range(0, len(wanted), 500):
            for row in conn.execute(q.where(c.id.in_(wanted[i : i + 500]))):
                out[row[0]] = ObjectRow(*row)
    return out


def missing(engine: sa.Engine, ids: Iterable[str]) -> list[str]:
    """The ids this registry lacks (not indexed, or indexed but marked damaged)."""
    wanted = check_ids(ids)
    rows = object_rows(engine, wanted)
    return [i for i in wanted if i not in rows or rows[i].damaged]


def with_bases(engine: sa.Engine, ids: Iterable[str]) -> dict[str, ObjectRow]:
    """Rows of ``ids`` and of their delta bases, recursively."""
    rows = object_rows(engine, ids)
    todo = {r.base for r in rows.values() if r.base and r.base not in rows}
    while todo:
        more = object_rows(engine, todo)
        rows.update(more)
        todo = {r.base for r in more.values() if r.base and r.base not in rows}
    return rows


def send_order(rows: dict[str, ObjectRow], ids: Iterable[str]) -> list[str]:
    """``ids`` ordered so a delta comes after its base (full entries first), records last:
    a pack that lands before a kill is useful alone, and a version record arrives only after
    the objects it names."""
    return sorted(ids, key=lambda i: (rows[i].kind == Kind.VERSION, rows[i].depth))


def plan_packs(rows: dict[str, ObjectRow], ids: list[str]) -> list[list[str]]:
    """Split ``ids`` (already in send order) into transfer packs of at most PACK_LIMIT."""
    packs: list[list[str]] = []
    cur: list[str] = []
    size = 0
    for i in ids:
        n = rows[i].stored_len + ENTRY.size
        if cur and size + n > PACK_LIMIT:
            packs.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += n
    if cur:
        packs.append(cur)
    return packs


def write_pack(repo, ids: list[str], staging: Path) -> tuple[str, Path, int]:
    """A transfer pack of ``ids`` as this registry stores them: (name, temp path, size).

    The payloads are copied as they are: nothing is decoded or re-encoded on the way out (the
    receiver verifies each one anyway)."""
    rows = object_rows(repo.engine, ids)
    lost = [i for i in ids if i not in rows]
    if lost:
        raise IntegrityError(f"object {lost[0]} is not in this registry")
    writer = PackWriter(staging)
    try:
        for i in ids:
            r = rows[i]
            payload = repo.store.backend.get(r.pack, r.offset, r.stored_len)
            writer.add(r.id, payload, r.raw_len, r.codec, r.base, r.depth, r.plain_len, r.kind)
        name = writer.finish()
    except BaseException:
        writer.discard()
        raise
    return name, writer.path, writer.size


@dataclass
class Received:
    name: str
    objects: int  # entries in the pack
    new: int  # entries this registry did not have
    bytes: int  # size of the pack


def _verify(repo, blob: bytes, name: str, wanted: set[str] | None) -> list:
    """Every entry of ``blob`` decodes to its id; returns the entries. Raises IntegrityError."""
    entries = []
    decoded: dict[str, memoryview | bytes] = {}  # this pack's entries that others delta on
    bases_here = set()
    for entry, _payload in iter_entries(blob, name):
        if entry.base:
            bases_here.add(entry.base)
    for entry, payload in iter_entries(blob, name):
        what = f"pack {name[:16]}…: object {entry.id[:16]}…"
        if wanted is not None and entry.id not in wanted:
            raise IntegrityError(f"{what} was not asked for")
        if entry.kind not in (Kind.CHUNK, Kind.MANIFEST, Kind.VERSION):
            raise IntegrityError(f"{what} has unknown kind {entry.kind}")
        if entry.raw_len > MAX_RAW or entry.depth > MAX_DELTA_DEPTH:
            raise IntegrityError(f"{what} claims {entry.raw_len} bytes / delta depth {entry.depth}")
        if (entry.base is None) != (entry.depth == 0):
            raise IntegrityError(f"{what}: delta depth {entry.depth} with base {entry.base}")
        base = None
        if entry.base is not None:
            base = decoded.get(entry.base)
            if base is None:
                try:
                    base = repo.store.read(entry.base)
                except IntegrityError as exc:
                    raise IntegrityError(f"{what}: its delta base is not here ({exc})") from exc
        try:
            from tvc.store import codecs  # numpy: not for commands that only open a registry

            raw = codecs.decode(entry.codec, payload, entry.raw_len, base=base)
        except IntegrityError as exc:
            raise IntegrityError(f"{what}: {exc}") from exc
        if len(raw) != entry.raw_len or hashing.digest(raw) != entry.id:
            raise IntegrityError(f"{what}: content does not match its id")
        if entry.kind == Kind.MANIFEST:
            Manifest.from_canonical(bytes(raw), entry.id)
        elif entry.kind == Kind.VERSION:
            try:
                doc = parse_version_record(bytes(raw))
                _ = doc["model"], doc["parents"], doc["files"]
            except (ValueError, KeyError, TypeError) as exc:
                raise IntegrityError(f"{what}: not a version record ({exc})") from exc
        if entry.id in bases_here:
            decoded[entry.id] = bytes(raw)
        entries.append(entry)
    return entries


def receive_pack(
    repo, path: Path, name: str, *, wanted: Iterable[str] | None = None, lease: str | None = None
) -> Received:
    """Verify the transfer pack at ``path`` (a temp file this call consumes), then move it
    into the store and index it in one transaction. ``wanted``: the only ids it may hold.

    A pack whose every entry is indexed already is dropped, not stored twice.
    """
    try:
        check_pack_name(name)
        size = path.stat().st_size
        if size > MAX_PACK_BYTES:
            raise IntegrityError(f"pack {name[:16]}… is {size} bytes, more than a pack may be")
        blob = path.read_bytes()
        if hashing.digest(blob) != name:
            raise IntegrityError(f"pack {name[:16]}…: its bytes do not hash to its name")
        entries = _verify(repo, blob, name, set(wanted) if wanted is not None else None)
        del blob
        have = object_rows(repo.engine, [e.id for e in entries])
        new = [e for e in entries if e.id not in have or have[e.id].damaged]
        if not new:
            return Received(name, len(entries), 0, size)
        obj = pack_object_name(name)
        repo.store.backend.put(obj, path)
        p = idx.packs.c
        with repo.meta.write() as conn:
            same = conn.execute(
                sa.select(p.id, p.retired).where(p.name == obj).with_for_update()
            ).first()  # locked: gc retires it only if no row points at it (gc._rewrite)
            if same is not None and same.retired is not None:
                # An identical pack (same bytes, same name) that a gc is reclaiming right now:
                # its object goes any moment, ours with it. Once that gc is done, a resend
                # stores it afresh.
                raise ConflictError(f"pack {name[:16]}… is being reclaimed here; {RESEND}")
            if same is not None:  # stored and indexed already (same bytes): index into it
                pid = same.id
            else:
                pid = conn.execute(
                    idx.packs.insert().values(name=obj, size=size, created=time.time())
                ).inserted_primary_key[0]
            rows = [entry_row(e, pid) for e in new]
            idx.insert_new(conn, idx.chunks, [r for r in rows if r["id"] not in have])
            c = idx.chunks.c
            for r in rows:  # a damaged copy is replaced by the good one received
                if r["id"] in have:
                    conn.execute(idx.chunks.update().where(c.id == r["id"]).values(**r))
            if lease is not None:
                renew_lease(conn, lease)
        if not repo.store.backend.exists(obj) and path.exists():
            # A gc deleted an identical pack's object between our put (which found it there)
            # and our row (which it could insert only once that gc had dropped its own row).
            repo.store.backend.put(obj, path)
        return Received(name, len(entries), len(new), size)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def temp_file(staging: Path) -> tuple[int, Path]:
    staging.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="recv-", suffix=durable.TMP_SUFFIX, dir=staging)
    return fd, Path(tmp)


def save_stream(chunks: Iterator[bytes], staging: Path, limit: int = MAX_PACK_BYTES) -> Path:
    """Write a byte stream to a temp file in ``staging``, refusing more than ``limit`` bytes."""
    fd, tmp = temp_file(staging)
    n = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for block in chunks:
                n += len(block)
                if n > limit:
                    raise IntegrityError(f"a pack stream ran past {limit} bytes")
                f.write(block)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


# -- upload leases: gc leaves what a push in progress wrote ----------------------------------
def take_lease(repo, holder: str) -> str:
    lease = uuid.uuid4().hex
    now = time.time()
    with repo.meta.write() as conn:
        conn.execute(
            idx.uploads.insert().values(
                id=lease, holder=holder[:255], started=now, expires=now + LEASE_SECONDS
            )
        )
    return lease


def renew_lease(conn: sa.Connection, lease: str) -> None:
    conn.execute(
        idx.uploads.update()
        .where(idx.uploads.c.id == lease)
        .values(expires=time.time() + LEASE_SECONDS)
    )


def drop_lease(repo, lease: str) -> None:
    with contextlib.suppress(Exception), repo.meta.write() as conn:
        conn.execute(idx.uploads.delete().where(idx.uploads.c.id == lease))
