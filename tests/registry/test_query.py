"""The query language: parsing, syntax errors with positions, and its two back ends agreeing."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from tvc.errors import UsageError
from tvc.registry import query as q
from tvc.repo import schema as s

STATES = ("created", "training", "trained", "evaluated", "staged", "production", "archived")


def rec(**kw):
    base = {
        "model": "bert",
        "version": 3,
        "state": "evaluated",
        "created": time.time(),
        "author": "ana",
        "id": "3fa9c2e1" + "0" * 56,
        "params": {"lr": 1e-4, "opt": "adam", "fp16": True},
        "metrics": {"acc": 0.93, "grade": "B"},
        "tags": {"release-1"},
        "alias": {"production"},
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("metrics.acc >= 0.9", True),
        ("metrics.acc>=0.9 and params.lr<1e-3", True),
        ("metrics.acc > 0.95 or params.opt = adam", True),
        ("metrics.acc > 0.95 or (params.opt = sgd and state = evaluated)", False),
        ("not metrics.acc > 0.95", True),
        ("not (metrics.acc > 0.9 and params.lr < 1e-3)", False),
        ("metrics.missing > 0", False),
        ("metrics.missing != 0", False),
        ("not metrics.missing > 0", True),
        ("metrics.grade = B", True),
        ("metrics.grade > 0.5", False),  # a string never compares with a number
        ("metrics.acc = '0.93'", False),  # quoted: a string
        ("params.fp16 = true", True),
        ("params.fp16 != false", True),
        ("state = evaluated", True),
        ("state >= trained and state < staged", True),
        ("state > evaluated", False),
        ("tags = release-1", True),
        ("tags != release-1", False),
        ("tag = release-2", False),
        ("alias = production", True),
        ("model = bert", True),
        ("model = ber*", True),
        ("model != b*t", False),
        ("version = v3 and version >= 2 and version < 4", True),
        ("id = 3fa9c2e1", True),
        ("id != 3fa9", False),
        ("author = ana", True),
        ("created > 7d", True),
        ("created = today", True),
        ("created < yesterday", False),
        ("METRICS.acc >= 0.9 AND NOT state = archived", True),
        ("params.opt == adam", True),
        ('params.opt = "adam"', True),
    ],
)
def test_python_evaluation(text, expected):
    assert q.parse(text).matches(rec(), STATES) is expected


def test_dates_are_local_days_and_points():
    noon = dt.datetime(2026, 11, 1, 12, 0).timestamp()
    r = rec(created=noon)
    for text, want in [
        ("created = 2026-11-01", True),
        ("created > 2026-11-01", False),  # after that whole day
        ("created >= 2026-11-01", True),
        ("created < 2026-11-02", True),
        ("created <= 2026-10-31", False),
        ("created > 2026-11-01T11:59", True),
        ("created < '2026-11-01 12:01'", True),
        ("created != 2026-11-01", False),
    ]:
        assert q.parse(text).matches(r, STATES) is want, text


@pytest.mark.parametrize(
    ("text", "column", "needle"),
    [
        ("metrics.acc >= ", 16, "expected a value after '>='"),
        ("metrics.acc >= and x", 16, "expected a value after '>=', got 'and'"),
        ("metrics.acc 0.9", 13, "expected an operator"),
        ("(metrics.acc > 1", 17, "missing ')'"),
        ("(metrics.acc > 1", 17, "for the '(' at column 1"),
        ("(metrics.acc > 1 x", 18, "got 'x' for the '(' at column 1"),
        ("metrics.acc > 1)", 16, "unbalanced ')'"),
        ("metric.acc > 1 or", 18, "expected a comparison"),
        ("acc > 0.9", 1, "unknown field 'acc'"),
        ("metrics > 0.9", 8, "metrics needs a key"),
        ("metrics.acc > 0.9 && state = x", 19, "expected 'and', 'or' or the end, got '&&'"),
        ("state ! evaluated", 7, "'!' must be followed by '='"),
        ("params.opt = 'adam", 14, "unterminated string"),
        ("tags > x", 8, "tags compares only with = or !="),
        ("version > abc", 11, "version takes a number"),
        ("created > soon", 11, "created takes a date"),
        ("params.fp16 < true", 15, "true/false compare only with = or !="),
        ("state = 3", 9, "state takes a name"),
    ],
)
def test_syntax_errors_show_position(text, column, needle):
    with pytest.raises(q.QuerySyntaxError) as info:
        q.parse(text, source="search")
    exc = info.value
    assert isinstance(exc, UsageError) and exc.exit_code == 2
    assert needle in exc.message
    assert exc.headline.startswith(f"search, column {column}: ")
    query_line, caret_line = exc.caret().splitlines()
    assert query_line == f"  {text}"
    assert caret_line.index("^") - 2 == column - 1


def test_unknown_state_is_an_error_not_an_empty_result():
    query = q.parse("state = evalauted and metrics.acc > 0")
    with pytest.raises(q.QuerySyntaxError, match="unknown state 'evalauted'") as info:
        query.check_states(STATES)
    assert info.value.pos == len("state = ")


def test_order_keys():
    assert q.parse_order("-metrics.acc") == q.OrderKey("metrics", "acc", True, "-metrics.acc")
    assert q.parse_order("created").descending is False
    assert q.parse_order("params.optimizer.lr").key == "optimizer.lr"
    for bad in ("tags", "metrics", "foo", "-"):
        with pytest.raises(UsageError, match="--order-by"):
            q.parse_order(bad)


def test_postgresql_sql_checks_json_types():
    where = q.compile_where(q.parse("metrics.acc >= 0.9 and params.opt = adam"), STATES)
    sql = str(
        sa.select(s.versions.c.id)
        .join_from(s.versions, s.models, s.versions.c.model_id == s.models.c.id)
        .where(where)
        .compile(dialect=postgresql.dialect())
    )
    assert "json_typeof" in sql and "= 'number'" in sql and "= 'string'" in sql
    assert "DOUBLE PRECISION" in sql
    assert "adam" not in sql  # values are bound, never pasted


# -- both back ends agree ---------------------------------------------------------------------
keys = st.sampled_from(["metrics.acc", "metrics.loss", "params.lr", "params.opt", "params.fp16"])
values = st.sampled_from(["0.7", "0.9", "1e-3", "0.01", "1", "adam", "sgd", "'n/a'", "true"])
ops = st.sampled_from(q.OPS)


@st.composite
def comparisons(draw):
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return f"state {draw(ops)} {draw(st.sampled_from(STATES))}"
    if kind == 1:
        return f"tags {draw(st.sampled_from(['=', '!=']))} t{draw(st.integers(0, 2))}"
    if kind == 2:
        return f"version {draw(ops)} {draw(st.integers(1, 80))}"
    if kind == 3:
        return f"alias {draw(st.sampled_from(['=', '!=']))} production"
    if kind == 4:
        return f"model {draw(st.sampled_from(['=', '!=']))} {draw(st.sampled_from(['m1', 'm*']))}"
    if kind == 5:
        return f"created {draw(ops)} {draw(st.sampled_from(['7d', '20d', 'today']))}"
    key, value = draw(keys), draw(values)
    op = draw(st.sampled_from(["=", "!="])) if value == "true" else draw(ops)
    return f"{key} {op} {value}"


queries = st.recursive(
    comparisons(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["and", "or"]), inner).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        inner.map(lambda x: f"not {x}"),
    ),
    max_leaves=5,
)


@pytest.fixture(scope="module")
def population(tmp_path_factory, bulk):
    """300 versions with mixed, partly missing values; and every version as a Python record."""
    import tvc

    reg = tvc.Registry.init(tmp_path_factory.mktemp("pop"))
    bulk(reg, 300)
    records = {}
    with reg.engine.connect() as conn:
        for v in reg.search(""):
            records[v.id] = reg._gate_record(conn, v)
    yield reg, records
    reg.close()


@settings(max_examples=100)
@given(text=queries)
def test_sql_and_python_agree(population, text):
    reg, records = population
    now = time.time()
    query = q.parse(text)
    want = {vid for vid, r in records.items() if query.matches(r, STATES, now)}
    got = {v.id for v in reg.search(text)}
    assert got == want, text
