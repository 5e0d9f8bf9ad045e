"""The analysis layer: comparing, attributing and combining versions down to the tensor.

Vocabulary (on top of DESIGN.md's *version*, *manifest*, *chunk*):

- **tensor key**: ``(file path, tensor name)``. Tensors are matched between versions by key, so
  a tensor that moved to another file reads as removed here and added there.
- **fingerprint** of a tensor: its dtype, its shape and the ids of the chunks holding its bytes.
  The formats layer cuts every tensor at its first byte, so two tensors with equal fingerprints
  have equal bytes: *unchanged* is decided from manifests alone, without reading any data.
- **status** of a tensor in a diff: ``unchanged``, ``changed`` (same dtype and shape, other
  bytes), ``added``, ``removed``, ``shape_changed`` (the shape differs; the dtype may too) or
  ``dtype_changed`` (same shape, other dtype).
- **change statistics** of a changed tensor, computed in float64 while streaming both sides
  block by block (memory stays bounded whatever the tensor's size): ``rel_l2`` = ‖B−A‖/‖A‖,
  ``l2`` = ‖B−A‖, ``max_abs`` = max|B−A|, ``cosine`` = ⟨A,B⟩/(‖A‖‖B‖), ``changed_elements``.
  BF16 is widened losslessly; quantized and unknown dtypes are reported changed without numbers.
- **blame** of a tensor: the oldest version of the unbroken run, walking first parents back
  from the given version, over which the tensor's fingerprint stayed the same — the version
  that last changed it.
- **merge base** (ancestor): the nearest common ancestor of two versions over parent links; if
  they share none, over parent and ``--base`` links (two fine-tunes of one base model).
- **conflict**: a tensor (or an opaque file) that both sides changed, differently, relative to
  the merge base. A merge *strategy* resolves conflicts; one-sided changes need no resolution.

Modules: :mod:`~tvc.analysis.tensors` (fingerprints, streaming reads, dtype conversion),
:mod:`~tvc.analysis.diff`, :mod:`~tvc.analysis.blame`, :mod:`~tvc.analysis.ancestry` (merge
base), :mod:`~tvc.analysis.merge`.
"""

from __future__ import annotations

from tvc.analysis.blame import Blame, BlameEntry, blame_version
from tvc.analysis.diff import Diff, FileDiff, TensorDiff, ValueDiff, diff_versions
from tvc.analysis.merge import STRATEGIES, MergeResult, merge_versions

__all__ = [
    "STRATEGIES",
    "Blame",
    "BlameEntry",
    "Diff",
    "FileDiff",
    "MergeResult",
    "TensorDiff",
    "ValueDiff",
    "blame_version",
    "diff_versions",
    "merge_versions",
]
