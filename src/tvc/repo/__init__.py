"""The repo layer: models, versions, manifests and refs on top of the chunk store.

Vocabulary
- *model*: a name ``[a-z0-9][a-z0-9._-]*``, optionally ``namespace/name``.
- *version*: an immutable snapshot of a model's files plus metadata, numbered per model (v1, v2,
  …) and named by the BLAKE3 of its canonical encoding (its *id*).
- *manifest*: one file of a version as an ordered list of chunks plus its tensor table; named by
  the BLAKE3 of its canonical encoding, so identical files share one manifest.
- *ref*: a branch (moves on commit), a tag (never moves) or an alias (moved by hand).
"""
