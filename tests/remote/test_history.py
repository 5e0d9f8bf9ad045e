"""Lifecycle states with their audit, aliases with their history and metrics added later travel
with the versions; pushed moves pass the receiver's gates or are refused."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

import tvc
from server_helpers import running_server, token
from tvc.errors import ConflictError
from tvc.remote import open_transport, sync

from repo_helpers import make_model_dir


@pytest.fixture(params=["path", "http"])
def connect(request):
    with contextlib.ExitStack() as stack:

        def make(path: Path, name: str = "pusher"):
            if request.param == "path":
                return str(path), None
            secret = token(path, name)
            url, _proc = stack.enter_context(running_server(path))
            return url, secret

        yield make


def audit(reg, model="m"):
    states = [(e.id, e.old, e.new, e.at) for e in reg.state_history(model)]
    moves = [(e.old_id, e.new_id, e.at, e.rollback) for e in reg.alias_history(model, "prod")]
    metrics = [(e.id, e.metrics, e.at) for e in reg.metric_history(f"{model}@v1")]
    return states, moves, metrics


def test_states_aliases_and_metrics_travel_with_their_history(tmp_path, connect):
    a = tvc.Registry.init(tmp_path / "a")
    for i in range(2):
        make_model_dir(tmp_path / "out", seed=1, n_layers=2, width=32, changed=tuple(range(i)))
        a.commit("m", [tmp_path / "out"], f"v{i + 1}", detect_code=False)
    a.add_metrics("m@v1", {"acc": 0.95})
    a.set_state("m@v1", "training")
    a.set_alias("m", "prod", "v1", reason="first")
    a.set_alias("m", "prod", "v2")
    a.rollback("m", "prod")
    tvc.Registry.init(tmp_path / "srv").close()
    where, secret = connect(tmp_path / "srv")
    with open_transport(where, secret) as remote:
        t = sync.push(a, remote, ["m"])
    assert t.history == {"applied": 5, "skipped": 0}  # 1 metric, 1 state, 3 alias moves
    srv = tvc.Registry(tmp_path / "srv")
    assert audit(srv) == audit(a)
    assert srv.resolve("m@prod").id == a.resolve("m@prod").id
    assert srv.show("m@v1").state == "training" and srv.show("m@v1").metrics["acc"] == 0.95
    actors = {e.actor for e in srv.alias_history("m", "prod")}
    assert actors == {"tester" if secret is None else "pusher"}
    c = tvc.Registry.clone(where, tmp_path / "c", token=secret)
    assert audit(c) == audit(a)
    # What the clone recorded is in its journal: a rebuild from its store gives it all back.
    c.close()
    tvc.Registry.rebuild_index(tmp_path / "c")
    c = tvc.Registry(tmp_path / "c")
    assert audit(c) == audit(a)
    assert [(v.id, v.number) for v in c.log("m")] == [(v.id, v.number) for v in a.log("m")]
    assert c.resolve("m@prod").id == a.resolve("m@prod").id
    # A move made on the clone travels back on the next push, with no new version.
    c.set_alias("m", "prod", "v2", reason="from the clone")
    with open_transport(where, secret) as remote:
        t = sync.push(c, remote, ["m"])
        assert t.history == {"applied": 1, "skipped": 0}
        assert srv.resolve("m@prod").id == c.resolve("m@v2").id
        assert sync.push(c, remote, ["m"]).history == {"applied": 0, "skipped": 0}


def test_a_pushed_move_that_fails_the_receivers_gate_is_refused(tmp_path, connect):
    srv = tvc.Registry.init(tmp_path / "srv")
    with open(srv.dir / "config.toml", "a") as f:
        f.write('\n[gates]\nprod = ["metrics.acc >= 0.9"]\n')
    srv.close()
    a = tvc.Registry.init(tmp_path / "a")
    make_model_dir(tmp_path / "out", seed=1, n_layers=2, width=32)
    a.commit("m", [tmp_path / "out"], "v1", metrics={"acc": 0.5}, detect_code=False)
    a.set_alias("m", "prod", "v1")  # no gate here
    where, secret = connect(tmp_path / "srv")
    with open_transport(where, secret) as remote:
        with pytest.raises(ConflictError, match="gate"):
            sync.push(a, remote, ["m"])
        srv = tvc.Registry(tmp_path / "srv")
        assert srv.models() == []  # one transaction: neither the version nor the move
        sync.push(a, remote, ["m"], force=True)
    assert srv.resolve("m@prod").id == a.resolve("m@v1").id
    assert srv.alias_history("m", "prod")[-1].forced
