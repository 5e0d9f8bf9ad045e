"""Flavors: how a committed model's files become something that answers ``predict``.

Vocabulary
- *flavor*: one way of loading a model folder — ``sklearn`` (skops; joblib or pickle only with
  ``trust_pickle``, after tvc's pickle scan), ``onnx`` (onnxruntime), ``torch`` (TorchScript or
  a ``torch.export`` program; never a plain pickle), ``transformers`` (a Hugging Face model
  folder, offline), ``python`` (a committed ``predict.py`` with ``load(path)`` and
  ``predict(inputs)``).
- *loaded model*: a :class:`Model` — its input and output :class:`TensorSpec` (what the OIP
  metadata shows and what requests are checked against) and ``predict(arrays) -> arrays``.

Every runtime is imported inside the flavor that needs it, so serving an ONNX model does not
import torch, and a flavor whose package is missing says which extra installs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tvc.errors import InferenceInputError, ModelLoadError, UsageError
from tvc.serving.protocol import TensorSpec, datatype_of

FLAVORS = ("sklearn", "onnx", "torch", "transformers", "python")
SKOPS = (".skops",)
PICKLES = (".joblib", ".pkl", ".pickle")
TORCH = (".pt2", ".pt", ".ts", ".torchscript")
# Modules a trusted (--trust-pickle) scikit-learn pickle may still never import: these reach a
# shell, the file system, the network or arbitrary code, which no estimator needs to rebuild.
NEVER = (
    "os.",
    "posix.",
    "nt.",
    "subprocess.",
    "sys.",
    "shutil.",
    "socket.",
    "importlib.",
    "runpy.",
    "pty.",
    "ctypes.",
    "code.",
    "pickle.",
    "marshal.",
    "builtins.eval",
    "builtins.exec",
    "builtins.compile",
    "builtins.open",
    "builtins.__import__",
    "builtins.getattr",
    "__builtin__.",
)


class Model:
    """A loaded model: specs, ``predict``, and a sample input for warming it."""

    flavor = "?"

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
        self.inputs = inputs
        self.outputs = outputs

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def check(self, inputs: dict[str, np.ndarray], datatypes: dict[str, str]) -> None:
        """Refuse a request whose inputs do not match the specs (names, datatypes, shapes)."""
        if not self.inputs:
            return  # a model that states no inputs takes what it is given
        want = {s.name: s for s in self.inputs}
        for name in inputs:
            if name not in want:
                raise InferenceInputError(
                    f"unknown input {name!r} (the model takes {', '.join(sorted(want))})"
                )
        for name, spec in want.items():
            if name not in inputs:
                raise InferenceInputError(f"missing input {name!r}")
            why = spec.accepts(datatypes[name], inputs[name].shape)
            if why:
                raise InferenceInputError(why)

    def sample(self) -> dict[str, np.ndarray]:
        """One small input that fits the specs (1 for each free dimension), for warming."""
        out = {}
        for spec in self.inputs:
            shape = tuple(1 if d < 0 else d for d in spec.shape)
            if spec.datatype == "BYTES":
                arr = np.empty(shape, dtype=object)
                arr.fill(b"hello")
            else:
                from tvc.serving.protocol import DTYPES

                arr = np.zeros(shape, dtype=DTYPES[spec.datatype])
            out[spec.name] = arr
        return out

    def warm(self) -> None:
        if self.inputs:
            self.predict(self.sample())


def _need(module: str, extra: str = "serve") -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ModelLoadError(
            f"this flavor needs {module.split('.')[0]}: pip install 'tvc[{extra}]' ({exc})"
        ) from None


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and ".tvc" not in p.parts)


def _one(path: Path, suffixes: tuple[str, ...], what: str) -> Path:
    found = [p for p in _files(path) if p.suffix in suffixes]
    if len(found) != 1:
        names = ", ".join(str(p.relative_to(path)) for p in found) or "none"
        raise ModelLoadError(f"{what}: expected one {'/'.join(suffixes)} file, found {names}")
    return found[0]


def detect(path: Path) -> str:
    """The flavor a model folder's files say it is (``predict.py`` wins: it is explicit)."""
    files = _files(path)
    names = {p.relative_to(path).as_posix() for p in files}
    suffixes = {p.suffix for p in files}
    if "predict.py" in names:
        return "python"
    if "config.json" in names and suffixes & {".safetensors", ".bin"}:
        return "transformers"
    if ".onnx" in suffixes:
        return "onnx"
    if suffixes & set(SKOPS + PICKLES):
        return "sklearn"
    if suffixes & set(TORCH):
        return "torch"
    raise ModelLoadError(
        f"no flavor fits the files of this version ({', '.join(sorted(names)[:8]) or 'none'}); "
        f"give --flavor {'|'.join(FLAVORS)}"
    )


def load(path: Path, flavor: str = "auto", *, trust_pickle: bool = False) -> Model:
    """Load the model folder ``path`` as ``flavor`` (``auto``: :func:`detect`)."""
    if flavor == "auto":
        flavor = detect(path)
    loaders: dict[str, Callable[..., Model]] = {
        "sklearn": lambda p: SklearnModel.load(p, trust_pickle=trust_pickle),
        "onnx": OnnxModel.load,
        "torch": TorchModel.load,
        "transformers": TransformersModel.load,
        "python": PythonModel.load,
    }
    if flavor not in loaders:
        raise UsageError(f"unknown flavor {flavor!r} (one of auto, {', '.join(FLAVORS)})")
    try:
        model = loaders[flavor](path)
    except ModelLoadError:
        raise
    except Exception as exc:  # a runtime's own failure: one line, with its type
        detail = " ".join(str(exc).split())[:300]
        raise ModelLoadError(
            f"{flavor} model failed to load: {type(exc).__name__}: {detail}"
        ) from None
    model.flavor = flavor
    return model


# -- scikit-learn ---------------------------------------------------------------------------
class SklearnModel(Model):
    """An estimator with ``predict`` (and ``predict_proba`` when it has one) on FP64 rows."""

    def __init__(self, est: Any) -> None:
        n = getattr(est, "n_features_in_", None)
        inputs = [TensorSpec("input-0", "FP64", (-1, int(n) if n is not None else -1))]
        classes = getattr(est, "classes_", None)
        label = "BYTES" if classes is not None and classes.dtype.kind in "OUS" else "INT64"
        if classes is None:
            label = "FP64"
        outputs = [TensorSpec("predict", label, (-1,))]
        if hasattr(est, "predict_proba") and classes is not None:
            outputs.append(TensorSpec("predict_proba", "FP64", (-1, len(classes))))
        super().__init__(inputs, outputs)
        self.est = est

    @classmethod
    def load(cls, path: Path, *, trust_pickle: bool = False) -> SklearnModel:
        found = [p for p in _files(path) if p.suffix in SKOPS + PICKLES]
        skops_files = [p for p in found if p.suffix in SKOPS]
        if skops_files:
            f = _one(path, SKOPS, "sklearn")
            sio = _need("skops.io")
            untrusted = sio.get_untrusted_types(file=f)
            if untrusted and not trust_pickle:
                raise ModelLoadError(
                    f"{f.name}: skops would load types it does not trust by default "
                    f"({', '.join(untrusted[:8])}); --trust-pickle accepts them"
                )
            return cls(sio.load(f, trusted=untrusted))
        f = _one(path, PICKLES, "sklearn")
        unsafe = _scan(f)
        if not trust_pickle:
            raise ModelLoadError(
                f"{f.name} is a pickle: loading it runs the code it names "
                f"({', '.join(unsafe[:6]) or 'no imports'}); save it with skops, or pass "
                "--trust-pickle"
            )
        bad = [g for g in unsafe if g.startswith(NEVER) or g.split(":")[-1].startswith(NEVER)]
        if bad:
            raise ModelLoadError(
                f"{f.name}: the pickle imports {', '.join(bad[:6])}; refused even with "
                "--trust-pickle (no estimator needs them)"
            )
        if f.suffix == ".joblib":
            est = _need("joblib").load(f)
        else:
            import pickle

            with f.open("rb") as fh:
                est = pickle.load(fh)  # trusted by --trust-pickle, scanned above
        return cls(est)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["input-0"]
        out = {"predict": np.asarray(self.est.predict(x))}
        if len(self.outputs) > 1:
            out["predict_proba"] = np.asarray(self.est.predict_proba(x), dtype=np.float64)
        if out["predict"].dtype.kind in "OUS":
            out["predict"] = out["predict"].astype(object)
        elif self.outputs[0].datatype == "INT64":
            out["predict"] = out["predict"].astype(np.int64)
        return out


def _scan(f: Path) -> list[str]:
    """The globals a pickle file imports beyond tvc's allow-list (tvc's own scan)."""
    from tvc.formats.pickle_files import find_pickles

    with f.open("rb") as fh:
        findings, _legacy = find_pickles(f.name, fh, f.stat().st_size, f.suffix)
    if findings.problems:
        raise ModelLoadError(
            f"{f.name}: cannot be scanned to the end ({findings.problems[0]}), so it is not "
            "loaded (joblib writes arrays between pickle opcodes); save it with skops or pickle"
        )
    return findings.unsafe


# -- ONNX -------------------------------------------------------------------------------------
ONNX_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


def _onnx_spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    if arg.type not in ONNX_TYPES:
        raise ModelLoadError(f"ONNX {arg.name}: type {arg.type} is not servable over OIP")
    return TensorSpec(arg.name, ONNX_TYPES[arg.type], shape)


class OnnxModel(Model):
    def __init__(self, session: Any) -> None:
        super().__init__(
            [_onnx_spec(a) for a in session.get_inputs()],
            [_onnx_spec(a) for a in session.get_outputs()],
        )
        self.session = session

    @classmethod
    def load(cls, path: Path) -> OnnxModel:
        ort = _need("onnxruntime")
        f = _one(path, (".onnx",), "onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # one request is small; concurrency comes from requests
        opts.inter_op_num_threads = 1
        return cls(ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"]))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [s.name for s in self.outputs]
        feed = {
            k: (v.astype(str) if v.dtype == object else v) for k, v in inputs.items()
        }  # onnxruntime takes str arrays for tensor(string)
        return dict(zip(names, self.session.run(names, feed), strict=True))


# -- torch ------------------------------------------------------------------------------------
_TORCH_TYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "int16": "INT16",
    "int8": "INT8",
    "uint8": "UINT8",
    "bool": "BOOL",
}


def _signature(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]] | None:
    """Specs stated in a committed ``signature.json`` ({"inputs": [...], "outputs": [...]})."""
    f = path / "signature.json"
    if not f.is_file():
        return None
    try:
        doc = json.loads(f.read_text())
        return tuple(  # type: ignore[return-value]
            [TensorSpec(s["name"], s["datatype"], tuple(s["shape"])) for s in doc[key]]
            for key in ("inputs", "outputs")
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"signature.json: {exc}") from None


class TorchModel(Model):
    """A TorchScript module (``torch.jit.save``) or an ExportedProgram (``torch.export.save``,
    ``.pt2``). Both are loaded without unpickling arbitrary objects: TorchScript's loader
    rebuilds only tensors and compiled code, and an ExportedProgram is a graph. A plain
    ``torch.save`` pickle of a module is refused."""

    def __init__(self, module: Any, inputs: list[TensorSpec], outputs: list[TensorSpec]):
        super().__init__(inputs, outputs)
        self.module = module
        self.torch = importlib.import_module("torch")

    @classmethod
    def load(cls, path: Path) -> TorchModel:
        torch = _need("torch")
        f = _one(path, TORCH, "torch")
        sig = _signature(path)
        if f.suffix == ".pt2":
            program = torch.export.load(str(f))
            module = program.module()
            inputs = sig[0] if sig else _export_inputs(program)
            outputs = sig[1] if sig else [TensorSpec("output-0", "FP32", (-1,) * 2)]
        else:
            import zipfile

            if not zipfile.is_zipfile(f):
                raise ModelLoadError(f"{f.name}: not TorchScript (a legacy pickle); refused")
            with zipfile.ZipFile(f) as zf:
                if not any("/code/" in n or n.endswith(".py") for n in zf.namelist()):
                    raise ModelLoadError(
                        f"{f.name}: a torch.save pickle, not TorchScript or torch.export; "
                        "refused (save it with torch.jit.save or torch.export.save)"
                    )
            module = torch.jit.load(str(f), map_location="cpu")
            module.eval()
            inputs, outputs = sig or (
                [TensorSpec("input-0", "FP32", (-1, -1))],
                [TensorSpec("output-0", "FP32", (-1, -1))],
            )
        return cls(module, list(inputs), list(outputs))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        args = [torch.from_numpy(np.ascontiguousarray(inputs[s.name])) for s in self.inputs]
        with torch.inference_mode():
            out = self.module(*args)
        if isinstance(out, dict):
            out = [out[s.name] for s in self.outputs]
        elif not isinstance(out, list | tuple):
            out = [out]
        return {s.name: o.detach().numpy() for s, o in zip(self.outputs, out, strict=False)}


def _export_inputs(program: Any) -> list[TensorSpec]:
    specs = []
    for i, node in enumerate(n for n in program.graph.nodes if n.op == "placeholder"):
        val = node.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            continue
        if node.name in program.graph_signature.inputs_to_parameters:
            continue
        if node.name in program.graph_signature.inputs_to_buffers:
            continue
        shape = tuple(d if isinstance(d, int) else -1 for d in val.shape)
        dt = _TORCH_TYPES.get(str(val.dtype).removeprefix("torch."), "FP32")
        specs.append(TensorSpec(f"input-{i}" if i else "input-0", dt, shape))
    return [TensorSpec(f"input-{i}", s.datatype, s.shape) for i, s in enumerate(specs)]


# -- transformers -----------------------------------------------------------------------------
class TransformersModel(Model):
    """A committed Hugging Face model folder, loaded offline (``local_files_only``): text
    classification (``…ForSequenceClassification``), generation (``…ForCausalLM``) or feature
    extraction (anything else), all with a BYTES ``text`` input."""

    def __init__(self, task: str, model: Any, tokenizer: Any, labels: list[str]) -> None:
        outputs = {
            "text-classification": [
                TensorSpec("label", "BYTES", (-1,)),
                TensorSpec("logits", "FP32", (-1, len(labels))),
            ],
            "text-generation": [TensorSpec("generated_text", "BYTES", (-1,))],
            "feature-extraction": [TensorSpec("embedding", "FP32", (-1, -1))],
        }[task]
        super().__init__([TensorSpec("text", "BYTES", (-1,))], outputs)
        self.task, self.model, self.tokenizer, self.labels = task, model, tokenizer, labels
        self.torch = importlib.import_module("torch")
        self.lock = threading.Lock()  # a tokenizer is not safe to share across threads

    @classmethod
    def load(cls, path: Path) -> TransformersModel:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        tr = _need("transformers")
        config = tr.AutoConfig.from_pretrained(path, local_files_only=True)
        arch = " ".join(config.architectures or [])
        if "SequenceClassification" in arch:
            task, auto = "text-classification", tr.AutoModelForSequenceClassification
        elif "CausalLM" in arch or "LMHead" in arch:
            task, auto = "text-generation", tr.AutoModelForCausalLM
        else:
            task, auto = "feature-extraction", tr.AutoModel
        model = auto.from_pretrained(path, local_files_only=True)
        model.eval()
        tokenizer = tr.AutoTokenizer.from_pretrained(path, local_files_only=True)
        labels = [config.id2label[i] for i in range(len(config.id2label))]
        return cls(task, model, tokenizer, labels)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [t.decode() if isinstance(t, bytes) else str(t) for t in inputs["text"].reshape(-1)]
        torch = self.torch
        with self.lock, torch.inference_mode():
            enc = self.tokenizer(texts, return_tensors="pt", padding=True)
            if self.task == "text-classification":
                logits = self.model(**enc).logits
                labels = np.empty(len(texts), dtype=object)
                labels[:] = [self.labels[i].encode() for i in logits.argmax(-1).tolist()]
                return {"label": labels, "logits": logits.float().numpy()}
            if self.task == "text-generation":
                ids = self.model.generate(
                    **enc,
                    max_new_tokens=8,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                out = np.empty(len(texts), dtype=object)
                out[:] = [
                    s.encode() for s in self.tokenizer.batch_decode(ids, skip_special_tokens=True)
                ]
                return {"generated_text": out}
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            return {"embedding": emb.float().numpy()}


# -- python -----------------------------------------------------------------------------------
class PythonModel(Model):
    """A committed ``predict.py``: ``load(path) -> state``, ``predict(inputs)`` (or
    ``predict(state, inputs)`` when ``load`` returned something), optional ``INPUTS`` /
    ``OUTPUTS`` lists of ``{"name", "datatype", "shape"}``. Serving it runs its code: commit
    only what you would run."""

    _count = 0

    def __init__(self, module: Any, state: Any) -> None:
        def specs(key: str) -> list[TensorSpec]:
            return [
                TensorSpec(s["name"], s["datatype"], tuple(s["shape"]))
                for s in getattr(module, key, [])
            ]

        super().__init__(specs("INPUTS"), specs("OUTPUTS"))
        self.module, self.state = module, state

    @classmethod
    def load(cls, path: Path) -> PythonModel:
        f = path / "predict.py"
        if not f.is_file():
            raise ModelLoadError("python flavor: the version has no predict.py")
        cls._count += 1
        name = f"tvc_serve_predict_{cls._count}"  # one module per version: loaded side by side
        spec = importlib.util.spec_from_file_location(name, f)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(name, None)
        if not callable(getattr(module, "predict", None)):
            raise ModelLoadError("predict.py defines no predict(inputs)")
        state = module.load(str(path)) if callable(getattr(module, "load", None)) else None
        return cls(module, state)

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.state is None:
            out = self.module.predict(inputs)
        else:
            out = self.module.predict(self.state, inputs)
        if not isinstance(out, dict):
            out = {self.outputs[0].name if self.outputs else "output-0": out}
        result = {k: np.asarray(v) for k, v in out.items()}
        for k, v in result.items():
            datatype_of(v.dtype)  # an output OIP cannot carry is the model's error, said so
            if v.dtype.kind in "US":
                result[k] = v.astype(object)
        return result
