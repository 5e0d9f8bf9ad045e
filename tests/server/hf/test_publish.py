"""Publishing with the real clients: create_repo, upload_file, upload_folder, create_commit
(regular files in the commit, binary ones by the Git LFS batch API), and transformers'
push_to_hub, each a new tvc version on the branch; then from_pretrained by alias as the alias
moves and rolls back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import tvc
from hf_helpers import Counter

hf = pytest.importorskip("huggingface_hub")
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi  # noqa: E402
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError  # noqa: E402


def registry(hub):
    return tvc.Registry(hub["data"])


def test_upload_file_folder_and_commit_make_versions_on_the_branch(hub, tmp_path):
    api = HfApi(endpoint=hub["url"], token=hub["tokens"]["acme"])
    repo = "acme/pub"
    api.create_repo(repo)
    api.create_repo(repo, exist_ok=True)
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "sub" / "x.txt").write_text("x")
    weights = bytes(range(256)) * 4096  # binary: goes by Git LFS
    (folder / "weights.bin").write_bytes(weights)
    info = api.upload_folder(repo_id=repo, folder_path=folder, commit_message="first")
    reg = registry(hub)
    try:
        v1 = reg.resolve(f"{repo}@main")
        assert v1.number == 1 and v1.message == "first" and v1.author == "acme-only"
        assert info.oid == v1.id[:40]
        assert reg.read(v1, "weights.bin") == weights
        assert {fe.path for fe in v1.files} == {"config.json", "sub/x.txt", "weights.bin"}
        # upload_file: one file changed, the others carried over without being sent again
        api.upload_file(path_or_fileobj=b'{"a": 2}', path_in_repo="config.json", repo_id=repo)
        v2 = reg.resolve(f"{repo}@main")
        assert v2.number == 2 and v2.parents == (v1.id,)
        assert reg.read(v2, "config.json") == b'{"a": 2}'
        assert reg.read(v2, "weights.bin") == weights
        # create_commit on another branch, with a delete and an LFS file the server holds
        ops = [
            CommitOperationDelete(path_in_repo="sub/"),
            CommitOperationAdd(path_in_repo="copy.bin", path_or_fileobj=weights),
        ]
        with Counter(hub["url"]) as proxy:
            HfApi(endpoint=proxy.url, token=hub["tokens"]["acme"]).create_commit(
                repo, ops, commit_message="exp", revision="exp"
            )
        assert not any(m == "PUT" for m, _p in proxy.requests)  # known content: not re-sent
        v3 = reg.resolve(f"{repo}@exp")
        assert {fe.path for fe in v3.files} == {"config.json", "weights.bin", "copy.bin"}
        assert reg.resolve(f"{repo}@main").id == v2.id
        assert reg.read(v3, "copy.bin") == weights
    finally:
        reg.close()
    # What the server holds reads back through the Hub API with the SHA-256 of each file.
    tree = {e.path: e for e in api.list_repo_tree(repo, revision="exp", recursive=True)}
    assert tree["copy.bin"].lfs.sha256 == hashlib.sha256(weights).hexdigest()


def test_publishing_needs_write_scope_and_a_readable_model(hub):
    read = HfApi(endpoint=hub["url"], token=hub["tokens"]["read"])
    with pytest.raises(HfHubHTTPError) as exc:
        read.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id="acme/tiny")
    assert exc.value.response.status_code == 403
    acme = HfApi(endpoint=hub["url"], token=hub["tokens"]["acme"])
    with pytest.raises(RepositoryNotFoundError):
        acme.upload_file(path_or_fileobj=b"x", path_in_repo="a.txt", repo_id="secret/model")
    reg = registry(hub)
    try:
        assert reg.resolve("secret/model").number == 1  # nothing recorded
    finally:
        reg.close()


def tiny_tokenizer(tmp_path: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(59)]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def train(model, steps: int, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        ids = torch.randint(5, 64, (4, 8))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_push_to_hub_then_from_pretrained_by_alias_as_it_moves(hub, tmp_path, cache):
    transformers = pytest.importorskip("transformers")
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertConfig, BertForMaskedLM

    repo, tok = "acme/bert", hub["tokens"]["acme"]
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    model = BertForMaskedLM(config)
    tokenizer = tiny_tokenizer(tmp_path)
    train(model, 3, seed=1)
    model.push_to_hub(repo, token=tok)
    tokenizer.push_to_hub(repo, token=tok)
    first = state(model)
    train(model, 3, seed=2)
    model.push_to_hub(repo, token=tok, commit_message="more steps")
    second = state(model)
    assert not same(first, second)

    reg = registry(hub)
    try:
        versions = reg.log(f"{repo}@main")
        assert versions[0].message == "more steps"
        assert len(versions) == 3  # model, tokenizer, model again
        reg.set_alias(repo, "production", "v2")  # the first model with its tokenizer

        def load() -> dict:
            m = AutoModelForMaskedLM.from_pretrained(
                repo, revision="production", token=tok, cache_dir=cache
            )
            return state(m)

        assert same(load(), first)
        reg.set_alias(repo, "production", "v3")
        assert same(load(), second)  # the move is seen at once
        reg.rollback(repo, "production")
        assert same(load(), first)
    finally:
        reg.close()
    t = AutoTokenizer.from_pretrained(repo, revision="production", token=tok, cache_dir=cache)
    assert t("w1 w2 w60")["input_ids"] == tokenizer("w1 w2 w60")["input_ids"]
    assert t.get_vocab() == tokenizer.get_vocab()
    del transformers


def test_upload_sends_what_the_clients_expect_in_the_commit(hub, tmp_path):
    """The ndjson commit answer carries the new sha, which is accepted back as a revision."""
    api = HfApi(endpoint=hub["url"], token=hub["tokens"]["acme"])
    info = api.upload_file(
        path_or_fileobj=json.dumps({"k": 1}).encode(), path_in_repo="meta.json", repo_id="acme/meta"
    )
    assert api.model_info("acme/meta", revision=info.oid).sha == info.oid
