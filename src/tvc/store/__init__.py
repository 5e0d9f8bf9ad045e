"""The store: bytes, chunks, packs, backends. The lowest layer of tvc.

Vocabulary
- *chunk*: a piece of a file, named by the hex BLAKE3 of its raw bytes (its *id*).
- *codec*: how a chunk's bytes are encoded on disk (raw, zstd, float-grouped zstd, delta).
- *pack*: an append-only file of encoded chunks, named by the BLAKE3 of its own bytes, written
  once and never modified.
- *index*: rows in the metadata DB saying which pack holds which chunk at which offset.
- *backend*: where packs live (local directory, S3-compatible object store, memory); a dumb
  put/get/exists/list/delete interface with everything clever above it.

The store knows nothing of files, versions or models.

Invariants (checked by ``tvc fsck``)
1. Packs are written once (temp → fsync → rename → fsync dir) and never modified.
2. Order of writes: pack → index rows (one transaction) → refs. So an index row only names a
   pack that exists, and a pack without index rows is garbage left by a crash, never data loss.
3. Every chunk decodes to bytes whose BLAKE3 is its id; every pack hashes to its name.
4. A delta chunk's base is an indexed chunk, and no delta chain is longer than ``MAX_DELTA_DEPTH``
   (the store writes deltas against full chunks only, so the chains it writes are one deep).
"""
