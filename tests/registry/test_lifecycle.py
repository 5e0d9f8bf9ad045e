"""Lifecycle: the state machine, illegal transitions, gates, --force, and the audit log."""

from __future__ import annotations

import pytest

from tvc.errors import ConflictError, UsageError
from tvc.registry import Lifecycle

WALK = ("training", "trained", "evaluated", "staged")


def test_default_machine(reg):
    lc = reg.lifecycle()
    assert lc.states[0] == "created" and lc.states[-1] == "archived"
    assert lc.allowed("created") == ("training", "archived")
    assert lc.allowed("staged") == ("production", "archived")
    assert lc.allowed("archived") == ()


def test_new_versions_start_in_the_initial_state(reg, commit):
    assert commit().state == "created"


def test_forward_steps(reg, commit):
    v = commit()
    for st in (*WALK, "production"):
        e = reg.set_state(v.ref, st, reason=f"to {st}")
        assert e.new == st and not e.forced
    assert reg.show(v.ref).state == "production"
    assert reg.set_state(v.ref, "production") is None  # already there: nothing recorded
    assert [e.new for e in reg.state_history(v.ref)] == [*WALK, "production"]


def test_illegal_transition_names_the_legal_ones(reg, commit):
    v = commit()
    with pytest.raises(ConflictError) as info:
        reg.set_state(v.ref, "production")
    msg = str(info.value)
    assert info.value.exit_code == 11
    assert "created → production is not allowed" in msg
    assert "legal next states: training, archived" in msg
    assert reg.show(v.ref).state == "created"
    assert reg.state_history(v.ref) == []


def test_backwards_and_out_of_archived_are_illegal(reg, commit):
    v = commit()
    reg.set_state(v.ref, "training")
    with pytest.raises(ConflictError, match="training → created"):
        reg.set_state(v.ref, "created")
    reg.set_state(v.ref, "archived")
    with pytest.raises(ConflictError, match="legal next states: none"):
        reg.set_state(v.ref, "training")


def test_unknown_state_is_a_usage_error(reg, commit):
    v = commit()
    with pytest.raises(UsageError, match=r"unknown state 'prod'.*created, training"):
        reg.set_state(v.ref, "prod")


def test_force_overrides_and_is_recorded(reg, commit):
    v = commit()
    e = reg.set_state(v.ref, "production", reason="hotfix", force=True)
    assert e.forced and "illegal transition created → production" in e.overridden
    (h,) = reg.state_history(v.ref)
    assert (h.old, h.new, h.reason, h.forced, h.actor) == (
        "created",
        "production",
        "hotfix",
        True,
        "tester",
    )
    # --force on a legal transition overrides nothing: not recorded as forced
    assert reg.set_state(v.ref, "archived", force=True).forced is False


def test_gate_blocks_with_expression_and_actual_values(reg, commit, configure):
    reg = configure(reg, '[gates]\nproduction = "metrics.accuracy >= 0.9 and params.lr < 0.01"\n')
    v = commit(metrics={"accuracy": 0.85}, params={"lr": 0.001})
    for st in WALK:
        reg.set_state(v.ref, st)
    with pytest.raises(ConflictError) as info:
        reg.set_state(v.ref, "production")
    msg = str(info.value)
    assert "gate 'production'" in msg
    assert "metrics.accuracy >= 0.9 and params.lr < 0.01" in msg
    assert "metrics.accuracy = 0.85" in msg and "params.lr = 0.001" in msg
    assert reg.show(v.ref).state == "staged"

    e = reg.set_state(v.ref, "production", reason="ship it", force=True)
    assert e.forced and e.overridden.startswith("gate production: metrics.accuracy >= 0.9")
    assert reg.state_history(v.ref)[-1].forced


def test_gate_passes_and_missing_metric_is_named(reg, commit, configure):
    reg = configure(reg, '[gates]\nstaged = ["metrics.accuracy >= 0.9", "state = evaluated"]\n')
    good = commit(metrics={"accuracy": 0.95})
    bad = commit(model="other")
    for v in (good, bad):
        for st in WALK[:-1]:
            reg.set_state(v.ref, st)
    assert reg.set_state(good.ref, "staged").forced is False
    with pytest.raises(ConflictError, match=r"metrics\.accuracy is missing"):
        reg.set_state(bad.ref, "staged")
    assert reg.check_gate("staged", bad.ref)[0].query.text == "metrics.accuracy >= 0.9"


def test_configured_machine(reg, commit, configure):
    reg = configure(
        reg,
        """
[lifecycle]
states = ["draft", "candidate", "live", "retired"]

[lifecycle.transitions]
draft = ["candidate"]
candidate = ["live", "draft"]
live = ["retired"]
""",
    )
    v = commit()
    assert v.state == "draft"
    reg.set_state(v.ref, "candidate")
    reg.set_state(v.ref, "draft")  # back: allowed here
    with pytest.raises(ConflictError, match="legal next states: candidate"):
        reg.set_state(v.ref, "live")
    assert reg.lifecycle().to_json()["transitions"]["retired"] == []


def test_configured_states_default_transitions(reg, configure):
    reg = configure(reg, '[lifecycle]\nstates = ["new", "ok", "archived"]\n')
    assert reg.lifecycle().allowed("new") == ("ok", "archived")
    assert reg.lifecycle().allowed("ok") == ("archived",)


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[lifecycle]\nstates = []\n", "non-empty list"),
        ('[lifecycle]\nstates = ["a", "a"]\n', "twice"),
        ('[lifecycle]\nstates = ["a b"]\n', "not a valid name"),
        ('[lifecycle]\nstates = ["a", "b"]\n[lifecycle.transitions]\na = ["c"]\n', "unknown"),
        ('[gates]\nproduction = "metrics.acc >="\n', "gates.production, column 15"),
        ('[gates]\nproduction = "state = prod"\n', "unknown state 'prod'"),
        ("[gates]\nproduction = 3\n", "expected a query"),
    ],
)
def test_config_mistakes_are_reported(reg, configure, toml, needle):
    bad = configure(reg, toml)
    with pytest.raises(UsageError) as info:
        bad.lifecycle()
    assert needle in str(info.value)


def test_model_history_covers_all_versions(reg, commit):
    a, b = commit(), commit()
    reg.set_state(a.ref, "training")
    reg.set_state(b.ref, "archived", reason="bad run")
    hist = reg.state_history("m")
    assert [(e.ref, e.new) for e in hist] == [(a.ref, "training"), (b.ref, "archived")]
    assert hist[1].to_json()["reason"] == "bad run"
    assert [e.ref for e in reg.state_history("m@v2")] == [b.ref]


def test_lifecycle_from_config_object():
    lc = Lifecycle.from_config({"gates": {"production": "metrics.acc > 0.5"}})
    assert lc.gates["production"][0].text == "metrics.acc > 0.5"


def test_a_broken_gate_blocks_only_what_it_guards(reg, commit, configure):
    reg = configure(reg, '[gates]\nproduction = "metrics.acc >="\n')
    v = commit()  # commit and search need only the states
    assert [x.ref for x in reg.search("state = created")] == [v.ref]
    reg.set_state(v.ref, "training")  # no gate guards training
    reg.set_alias("m", "staging", v.ref)
    with pytest.raises(UsageError, match=r"gates\.production, column 15"):
        reg.set_state(v.ref, "production", force=True)  # force overrides a gate, not a typo
    with pytest.raises(UsageError, match=r"gates\.production"):
        reg.set_alias("m", "production", v.ref)
