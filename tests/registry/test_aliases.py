"""Aliases: moves recorded with who/when/from/to/why, gates, and rollback as an undo stack."""

from __future__ import annotations

import pytest

from tvc.errors import ConflictError, ExistsError, UnknownRefError, UsageError


@pytest.fixture
def three(commit):
    return [commit(message=f"v{i}") for i in (1, 2, 3)]


def history(reg, alias="production"):
    return [(e.old, e.new, e.rollback) for e in reg.alias_history("m", alias)]


def test_set_resolve_and_list(reg, three):
    v1, v2, _ = three
    e = reg.alias("m", "production", "v1", reason="first release")
    assert (e.old, e.new, e.actor, e.reason, e.forced) == (
        None,
        "m@v1",
        "tester",
        "first release",
        False,
    )
    assert reg.resolve("m@production").id == v1.id
    reg.set_alias("m", "production", "m@v2")
    assert reg.resolve("m@production").id == v2.id
    assert reg.set_alias("m", "production", "v2") is None  # no move, nothing recorded
    (row,) = reg.aliases("m")
    assert (row["alias"], row["version"], row["id"]) == ("production", "v2", v2.id)
    assert row["actor"] == "tester" and row["since"]
    assert history(reg) == [(None, "m@v1", False), ("m@v1", "m@v2", False)]


def test_alias_names_are_checked(reg, three):
    for bad in ("v2", "a/b", "prod@x", ""):
        with pytest.raises(UsageError):
            reg.set_alias("m", bad, "v1")
    reg.branch("m", "staging", "v1")
    with pytest.raises(ExistsError, match="ambiguous"):
        reg.set_alias("m", "staging", "v1")
    with pytest.raises(UsageError, match="another model"):
        reg.set_alias("m", "production", "other@v1")
    with pytest.raises(UnknownRefError):
        reg.set_alias("m", "production", "v9")


def test_rollback_walks_back_like_undo(reg, three):
    for v in ("v1", "v2", "v3"):
        reg.set_alias("m", "production", v)
    e = reg.rollback("m", "production", reason="v3 regressed")
    assert (e.old, e.new, e.rollback, e.reason) == ("m@v3", "m@v2", True, "v3 regressed")
    assert reg.rollback("m", "production").new == "m@v1"
    with pytest.raises(ConflictError, match="no earlier target"):
        reg.rollback("m", "production")
    assert reg.resolve("m@production").number == 1
    assert history(reg) == [
        (None, "m@v1", False),
        ("m@v1", "m@v2", False),
        ("m@v2", "m@v3", False),
        ("m@v3", "m@v2", True),
        ("m@v2", "m@v1", True),
    ]


def test_move_after_rollback_then_rollback(reg, three):
    reg.set_alias("m", "production", "v1")
    reg.set_alias("m", "production", "v2")
    reg.rollback("m", "production")  # → v1
    reg.set_alias("m", "production", "v3")
    assert reg.rollback("m", "production").new == "m@v1"  # v2 was undone: not restored


def test_rollback_to_a_given_version(reg, three):
    for v in ("v1", "v2", "v3"):
        reg.set_alias("m", "production", v)
    e = reg.rollback("m", "production", to="v1")
    assert (e.old, e.new, e.rollback) == ("m@v3", "m@v1", True)
    with pytest.raises(ConflictError, match="no earlier target"):
        reg.rollback("m", "production")  # v1 was the bottom of the history
    with pytest.raises(ConflictError, match="already points at m@v1"):
        reg.rollback("m", "production", to="v1")


def test_rollback_restores_a_removed_alias(reg, three):
    reg.set_alias("m", "staging", "v1")
    reg.set_alias("m", "staging", "v2")
    e = reg.remove_alias("m", "staging", reason="pause")
    assert (e.old, e.new) == ("m@v2", None)
    with pytest.raises(UnknownRefError):
        reg.resolve("m@staging")
    assert reg.rollback("m", "staging").new == "m@v2"
    assert reg.rollback("m", "staging").new == "m@v1"


def test_unknown_alias(reg, three):
    with pytest.raises(UnknownRefError):
        reg.rollback("m", "nope")
    with pytest.raises(UnknownRefError):
        reg.alias_history("m", "nope")
    with pytest.raises(UnknownRefError):
        reg.remove_alias("m", "nope")


def test_gate_guards_alias_moves_and_force_is_recorded(reg, commit, configure):
    reg = configure(reg, '[gates]\nproduction = "metrics.acc >= 0.9"\n')
    good = commit(metrics={"acc": 0.95})
    bad = commit(metrics={"acc": 0.5})
    reg.set_alias("m", "production", good.ref)
    with pytest.raises(ConflictError) as info:
        reg.set_alias("m", "production", bad.ref)
    assert "metrics.acc >= 0.9 (metrics.acc = 0.5)" in str(info.value)
    assert reg.resolve("m@production").id == good.id
    reg.set_alias("m", "staging", bad.ref)  # no gate for staging
    e = reg.set_alias("m", "production", bad.ref, reason="demo", force=True)
    assert e.forced
    assert [x.forced for x in reg.alias_history("m", "production")] == [False, True]
    # a rollback is a move too: gated, and --force is recorded
    reg.set_alias("m", "production", good.ref)
    with pytest.raises(ConflictError):
        reg.rollback("m", "production")
    assert reg.rollback("m", "production", force=True).forced


def test_audit_answers_who_put_what_in_production_when(reg, three):
    reg.set_alias("m", "production", "v1", reason="launch")
    reg.set_alias("m", "production", "v2")
    reg.rollback("m", "production", reason="latency")
    entries = [e for e in reg.audit("m") if e["kind"] == "alias"]
    assert [(e["from"], e["to"], e["reason"], e["rollback"]) for e in entries] == [
        ("m@v2", "m@v1", "latency", True),
        ("m@v1", "m@v2", "", False),
        (None, "m@v1", "launch", False),
    ]
    assert all(e["actor"] == "tester" for e in entries)
