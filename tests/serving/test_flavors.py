"""Each flavor on a real model made here, committed, checked out and served: the answer over
OIP equals the model's own answer in-process, the metadata states typed specs, and what must be
refused (unscanned pickles, plain torch pickles) is refused with one clear line."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving_helpers import (
    N_FEATURES,
    export_dir,
    infer_body,
    onnx_dir,
    sklearn_dir,
    tiny_torch,
    torchscript_dir,
    training_data,
)
from tvc.errors import ModelLoadError
from tvc.serving import flavors
from tvc.serving.app import create_app
from tvc.serving.service import Service
from tvc.serving.source import LocalSource

X32 = training_data()[0][:3].astype(np.float32)


def serve(reg, cache, model="m", **kw) -> TestClient:
    svc = Service(LocalSource(reg, model, cache), model, [("main", 100)], **kw)
    svc.start(follow=False)
    return TestClient(create_app(svc))


def infer(c: TestClient, body: dict, model: str = "m") -> dict:
    r = c.post(f"/v2/models/{model}/infer", json=body)
    assert r.status_code == 200, r.text
    return {o["name"]: o for o in r.json()["outputs"]}


def torch_logits(x: np.ndarray) -> np.ndarray:
    import torch

    net = tiny_torch()  # trained again: the same seed gives the same weights
    with torch.inference_mode():
        return net(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("build", [onnx_dir, torchscript_dir, export_dir])
def test_torch_models_answer_as_torch_does(reg, commit, cache, build):
    # tvc's commit-time scan takes TorchScript's compiled classes (__torch__.*) for unsafe
    # imports (they are not Python imports: TorchScript compiles them from the archive's code/)
    commit("m", build, allow_unsafe_pickle=build is torchscript_dir)
    with serve(reg, cache) as c:
        meta = c.get("/v2/models/m").json()
        (spec,) = meta["inputs"]
        assert spec["datatype"] == "FP32" and spec["shape"] == [-1, N_FEATURES]
        flavor = {onnx_dir: "onnx", torchscript_dir: "torch", export_dir: "torch"}[build]
        assert meta["platform"] == f"tvc-{flavor}"
        out = infer(c, infer_body(X32, name=spec["name"], datatype="FP32"))
        (logits,) = out.values()
        assert logits["shape"] == [3, 2]
        np.testing.assert_allclose(
            np.array(logits["data"]).reshape(3, 2), torch_logits(X32), rtol=1e-5, atol=1e-6
        )


def test_a_plain_torch_pickle_is_refused(tmp_path):
    import torch

    d = tmp_path / "m"
    d.mkdir()
    torch.save(tiny_torch(), d / "model.pt")
    with pytest.raises(ModelLoadError, match=r"not TorchScript or torch\.export"):
        flavors.load(d, "torch")


def test_sklearn_pickles_need_trust_and_pass_the_scan(reg, commit, cache, tmp_path):
    jl = sklearn_dir(tmp_path / "jl", 1.0, "joblib")  # arrays inline: the scan cannot vouch
    with pytest.raises(ModelLoadError, match="cannot be scanned"):
        flavors.load(jl, trust_pickle=True)
    d = sklearn_dir(tmp_path / "pk", 1.0, "pickle")
    with pytest.raises(ModelLoadError, match="--trust-pickle"):
        flavors.load(d)
    model = flavors.load(d, trust_pickle=True)
    x = training_data()[0][:4]
    assert model.predict({"input-0": x})["predict"].tolist() == model.est.predict(x).tolist()

    evil = tmp_path / "evil"
    evil.mkdir()

    class Boom:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (evil / "model.pkl").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelLoadError, match="refused even with --trust-pickle"):
        flavors.load(evil, trust_pickle=True)
    assert not (tmp_path / "pwned").exists()


def test_detection_and_unknown_files(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "notes.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="no flavor fits"):
        flavors.load(d)
    assert flavors.detect(onnx_dir(tmp_path / "o")) == "onnx"
    assert flavors.detect(sklearn_dir(tmp_path / "s")) == "sklearn"


# -- transformers: tiny models built from a config, a word-level tokenizer made here -------------
WORDS = ["good", "great", "fine", "bad", "awful", "poor", "the", "movie", "was", "is"]


def tokenizer(dest: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        eos_token="[SEP]",
    )
    fast.save_pretrained(dest)
    return fast, len(vocab)


def transformers_dir(dest: Path, kind: str) -> Path:
    import torch
    import transformers as tr

    torch.manual_seed(0)
    tok, n = tokenizer(dest)
    small = {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}
    if kind == "classification":
        config = tr.BertConfig(vocab_size=n, num_hidden_layers=1, num_labels=2, **small)
        config.id2label, config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
        model = tr.BertForSequenceClassification(config)
        texts = ["the movie was good", "great movie", "bad movie", "the movie was awful"]
        labels = torch.tensor([1, 1, 0, 0])
        enc = tok(texts, return_tensors="pt", padding=True)
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(20):  # trained briefly: it learns the four sentences
            opt.zero_grad()
            model(**enc, labels=labels).loss.backward()
            opt.step()
    elif kind == "generation":
        config = tr.GPT2Config(vocab_size=n, n_embd=16, n_layer=1, n_head=2, n_positions=32)
        config.pad_token_id = config.eos_token_id = tok.pad_token_id
        model = tr.GPT2LMHeadModel(config)
    else:
        model = tr.BertModel(tr.BertConfig(vocab_size=n, num_hidden_layers=1, **small))
    model.eval()
    model.save_pretrained(dest)
    return dest


@pytest.mark.parametrize("kind", ["classification", "generation", "features"])
def test_transformers_offline(reg, commit, cache, kind, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commit("m", transformers_dir, kind)
    texts = ["the movie was good", "bad movie"]
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": texts}]}
    with serve(reg, cache) as c:
        meta = c.get("/v2/models/m").json()
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        out = infer(c, body)
        model = c.app.state.service.slots[0].current.model
    if kind == "classification":
        assert out["label"]["data"] == ["pos", "neg"]
        assert out["logits"]["shape"] == [2, 2]
    elif kind == "generation":
        assert out["generated_text"]["datatype"] == "BYTES"
        assert out["generated_text"]["data"][0].startswith("the movie was good")
    else:
        assert out["embedding"]["shape"] == [2, 16]
        assert model.task == "feature-extraction"
