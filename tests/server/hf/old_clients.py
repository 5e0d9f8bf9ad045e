"""Run by test_old_clients.py in a subprocess whose ``PYTHONPATH`` puts another generation of
the clients first (huggingface_hub 0.3x, transformers 4.x): the same calls against the same
server. Prints ``OK <n>`` when every check passed; raises otherwise."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path


def main(url: str, token: str, shas: dict[str, str], files_v1: dict[str, str]) -> None:
    import huggingface_hub as hh
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.utils import (
        EntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    assert hh.__version__.startswith("0."), hh.__version__
    checks = 0
    cache = tempfile.mkdtemp(prefix="hf-old-")
    api = HfApi(endpoint=url, token=token)
    info = api.model_info("acme/tiny", revision="production", files_metadata=True)
    assert info.sha == shas["v1"], info.sha
    checks += 1
    path = snapshot_download("acme/tiny", revision="production", cache_dir=cache, token=token)
    got = {
        p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in Path(path).rglob("*")
        if p.is_file()
    }
    assert got == files_v1, (got, files_v1)
    checks += 1
    notes = hf_hub_download(
        "acme/tiny", "sub/notes.txt", revision="refs/tags/release-3", cache_dir=cache, token=token
    )
    assert Path(notes).read_text() == "notes of v2\n"
    checks += 1
    for exc, call in (
        (RepositoryNotFoundError, lambda: api.model_info("acme/absent")),
        (RevisionNotFoundError, lambda: api.model_info("acme/tiny", revision="nope")),
        (
            EntryNotFoundError,
            lambda: hf_hub_download(
                "acme/tiny", "x.bin", revision="v1", cache_dir=cache, token=token
            ),
        ),
    ):
        try:
            call()
        except exc:
            checks += 1
        else:
            raise AssertionError(f"no {exc.__name__}")

    # publishing, and transformers 4.x loading by alias
    import torch
    from transformers import AutoModel, BertConfig, BertModel

    repo = "acme/old-bert"
    config = BertConfig(
        vocab_size=32,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
    )
    model = BertModel(config)
    model.push_to_hub(repo, token=token)
    checks += 1
    loaded = AutoModel.from_pretrained(repo, revision="main", token=token, cache_dir=cache)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    checks += 1
    print("OK", checks)


if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    main(**args)
