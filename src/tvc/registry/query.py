"""The expression language of ``tvc search`` and of gates: one parser, two back ends.

A query is comparisons joined by ``and`` / ``or`` / ``not`` and parentheses::

    metrics.acc >= 0.9 and (params.lr < 1e-3 or tags = release-1) and not state = archived

Fields
- ``metrics.KEY``, ``params.KEY``: a value of the version (KEY is everything after the first dot,
  so ``params.optimizer.lr`` is the key ``optimizer.lr``). Metrics include those added later.
- ``state``: the lifecycle state; ``<``/``>`` compare positions in the lifecycle
  (``state >= staged``).
- ``model`` (``*`` is a wildcard: ``model = team/*``), ``author``, ``id`` (a prefix).
- ``version``: the number, ``3`` or ``v3``.
- ``tags`` / ``alias``: ``tags = release-1`` means "has that tag"; ``!=`` means "has not".
- ``created``: ``2026-11-01`` (that whole day, local time), ``2026-11-01T10:30`` (ISO, local
  unless it has an offset), ``today``, ``yesterday``, or an age: ``30m``, ``12h``, ``7d``, ``2w``
  (``created > 7d`` = in the last 7 days).

Values are numbers, ``true``/``false``, quoted strings (``'a b'`` or ``"a b"``) or bare words.
A number compares only with numbers, a string only with strings; a missing key makes every
comparison on it false (so ``not metrics.acc >= 0.9`` includes versions without ``acc``).

:func:`parse` gives a :class:`Query`; :meth:`Query.matches` evaluates it on one version in Python
(gates), :func:`compile_where` turns it into SQL (search) — on SQLite and PostgreSQL alike, with
the JSON type checks inside the SQL so a string never compares with a number. Both back ends
agree; the tests check that on random queries.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

from tvc.errors import UsageError
from tvc.repo import schema as s

OPS = ("=", "!=", "<", "<=", ">", ">=")
KEYED = ("metrics", "params")
PLAIN = ("state", "model", "author", "id", "version", "tags", "alias", "created")
_SYNONYMS = {"tag": "tags", "aliases": "alias", "metric": "metrics", "param": "params"}
FIELD_HELP = "metrics.KEY, params.KEY, state, model, version, tags, alias, created, author, id"
ORDER_FIELDS = ("metrics", "params", "state", "model", "version", "created", "author")

_NUMBER_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_AGE_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_WORD_STOP = set(" \t\r\n()=!<>'\"")


class QuerySyntaxError(UsageError):
    """A query (or gate) that does not parse; knows where, to draw a caret under it."""

    def __init__(self, what: str, query: str, pos: int, source: str = "query") -> None:
        self.what = what
        self.query = query
        self.pos = max(0, min(pos, len(query)))
        self.source = source
        self.headline = f"{source}, column {self.pos + 1}: {what}"
        super().__init__(f"{self.headline}\n{self.caret()}")

    def caret(self) -> str:
        """The query on one line and a ``^`` under the offending position on the next."""
        return f"  {self.query}\n  {' ' * self.pos}^"


# -- syntax tree ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Cmp:
    field: str  # one of KEYED + PLAIN
    key: str | None  # for metrics/params
    op: str
    value: Any  # float/int, bool, str
    raw: str  # the value as typed
    pos: int  # where the comparison starts
    value_pos: int

    @property
    def name(self) -> str:
        return f"{self.field}.{self.key}" if self.key is not None else self.field

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.raw}"


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


@dataclass(frozen=True)
class All:
    """The empty query: matches everything."""


Node = Cmp | And | Or | Not | All


@dataclass(frozen=True)
class _Tok:
    kind: str  # "(", ")", "op", "word", "str", "end"
    text: str
    pos: int
    value: str = ""


def _tokenize(text: str, source: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()":
            toks.append(_Tok(c, c, i))
            i += 1
        elif c in "=!<>":
            two = text[i : i + 2]
            if two in ("!=", "<=", ">=", "=="):
                toks.append(_Tok("op", "=" if two == "==" else two, i))
                i += 2
            elif c == "!":
                raise QuerySyntaxError("'!' must be followed by '=' (use 'not')", text, i, source)
            else:
                toks.append(_Tok("op", c, i))
                i += 1
        elif c in "'\"":
            j = i + 1
            buf = []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                raise QuerySyntaxError("unterminated string", text, i, source)
            toks.append(_Tok("str", text[i : j + 1], i, "".join(buf)))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in _WORD_STOP:
                j += 1
            toks.append(_Tok("word", text[i:j], i, text[i:j]))
            i = j
    toks.append(_Tok("end", "", n))
    return toks


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.toks = _tokenize(text, source)
        self.i = 0

    def error(self, what: str, pos: int) -> QuerySyntaxError:
        return QuerySyntaxError(what, self.text, pos, self.source)

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def keyword(self, word: str) -> bool:
        t = self.tok
        return t.kind == "word" and t.text.lower() == word

    def parse(self) -> Node:
        if self.tok.kind == "end":
            return All()
        node = self.or_()
        if self.tok.kind != "end":
            t = self.tok
            if t.kind == ")":
                raise self.error("unbalanced ')'", t.pos)
            raise self.error(f"expected 'and', 'or' or the end, got {t.text!r}", t.pos)
        return node

    def or_(self) -> Node:
        items = [self.and_()]
        while self.keyword("or"):
            self.i += 1
            items.append(self.and_())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_(self) -> Node:
        items = [self.not_()]
        while self.keyword("and"):
            self.i += 1
            items.append(self.not_())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_(self) -> Node:
        if self.keyword("not"):
            self.i += 1
            return Not(self.not_())
        return self.atom()

    def atom(self) -> Node:
        t = self.tok
        if t.kind == "(":
            self.i += 1
            node = self.or_()
            if self.tok.kind != ")":
                what = f"got {self.tok.text!r}" if self.tok.text else "missing ')'"
                raise self.error(f"{what} for the '(' at column {t.pos + 1}", self.tok.pos)
            self.i += 1
            return node
        if t.kind == "end":
            raise self.error("expected a comparison like metrics.acc >= 0.9, got the end", t.pos)
        if t.kind != "word" or t.text.lower() in ("and", "or", "not"):
            raise self.error(f"expected a field ({FIELD_HELP}), got {t.text!r}", t.pos)
        field, key = self.field(t)
        self.i += 1
        op = self.tok
        if op.kind != "op":
            got = f", got {op.text!r}" if op.text else ""
            raise self.error(f"expected an operator (= != < <= > >=) after {t.text}{got}", op.pos)
        self.i += 1
        v = self.tok
        if v.kind not in ("word", "str") or (
            v.kind == "word" and v.text.lower() in ("and", "or", "not")
        ):
            got = f", got {v.text!r}" if v.text else ""
            raise self.error(f"expected a value after '{op.text}'{got}", v.pos)
        self.i += 1
        value = _value(v)
        cmp = Cmp(field, key, op.text, value, v.text, t.pos, v.pos)
        self.check(cmp)
        return cmp

    def field(self, t: _Tok) -> tuple[str, str | None]:
        head, dot, key = t.text.partition(".")
        head = _SYNONYMS.get(head.lower(), head.lower())
        if head in KEYED:
            if not dot or not key:
                raise self.error(f"{head} needs a key, e.g. {head}.acc", t.pos + len(t.text))
            if '"' in key or any(ord(ch) < 32 for ch in key):
                raise self.error(f"unsupported character in key {key!r}", t.pos)
            return head, key
        if head in PLAIN and not dot:
            return head, None
        raise self.error(f"unknown field {t.text!r} (fields: {FIELD_HELP})", t.pos)

    def check(self, c: Cmp) -> None:
        """Type rules that do not need the registry: they fail at parse time, with a position."""
        eq_only = c.op in ("=", "!=")
        if isinstance(c.value, bool) and not eq_only:
            raise self.error(f"true/false compare only with = or != (got {c.op})", c.value_pos)
        if c.field in ("tags", "alias", "model", "author", "id") and not eq_only:
            raise self.error(f"{c.field} compares only with = or != (got {c.op})", c.value_pos)
        if c.field in ("state", "model", "author", "id", "tags", "alias") and not isinstance(
            c.value, str
        ):
            raise self.error(f"{c.field} takes a name, got {c.raw}", c.value_pos)
        if c.field == "id" and not re.fullmatch(r"[0-9a-f]{1,64}", str(c.value)):
            raise self.error("id takes hex digits (a prefix of a version id)", c.value_pos)
        if c.field == "version" and _version_number(c.value) is None:
            raise self.error(f"version takes a number like 3 or v3, got {c.raw}", c.value_pos)
        if c.field == "created":
            try:
                time_range(c.value, time.time())
            except ValueError as exc:
                raise self.error(str(exc), c.value_pos) from None


def _value(t: _Tok) -> Any:
    if t.kind == "str":
        return t.value
    text = t.text
    if _NUMBER_RE.match(text):
        f = float(text)
        return int(text) if re.fullmatch(r"[-+]?\d+", text) else f
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    return text


def _version_number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"v\d+", value):
        return int(value[1:])
    return None


def time_range(value: Any, now: float) -> tuple[float, float]:
    """A ``created`` value as a half-open interval [start, end) of epoch seconds.

    A date is that whole (local) day; ``today``/``yesterday`` likewise; a date-time or an age
    (``7d``: now minus 7 days) is a point, returned as (t, t).
    """
    text = str(value).strip()
    low = text.lower()
    if low in ("today", "yesterday"):
        day = dt.date.fromtimestamp(now) - dt.timedelta(days=1 if low == "yesterday" else 0)
        start = dt.datetime.combine(day, dt.time()).timestamp()
        return start, dt.datetime.combine(day + dt.timedelta(days=1), dt.time()).timestamp()
    if low == "now":
        return now, now
    m = _AGE_RE.match(low)
    if m:
        t = now - float(m.group(1)) * _AGE_UNITS[m.group(2)]
        return t, t
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not a date: {text}") from None
        start = dt.datetime.combine(day, dt.time()).timestamp()
        return start, dt.datetime.combine(day + dt.timedelta(days=1), dt.time()).timestamp()
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"created takes a date (2026-11-01), a date-time (2026-11-01T10:30), today, "
            f"yesterday or an age (30m, 12h, 7d, 2w); got {text!r}"
        ) from None
    t = when.timestamp()
    return t, t


@dataclass(frozen=True)
class Query:
    """A parsed query. ``text`` is what was typed; ``root`` the tree."""

    text: str
    root: Node
    source: str = "query"

    def __str__(self) -> str:
        return self.text

    def comparisons(self) -> list[Cmp]:
        out: list[Cmp] = []

        def walk(n: Node) -> None:
            if isinstance(n, Cmp):
                out.append(n)
            elif isinstance(n, And | Or):
                for x in n.items:
                    walk(x)
            elif isinstance(n, Not):
                walk(n.item)

        walk(self.root)
        return out

    def check_states(self, states: Sequence[str]) -> None:
        """A state the lifecycle does not know is a typo, not an empty result."""
        for c in self.comparisons():
            if c.field == "state" and c.value not in states:
                raise QuerySyntaxError(
                    f"unknown state {c.value!r} (states: {', '.join(states)})",
                    self.text,
                    c.value_pos,
                    self.source,
                )

    # -- Python back end (gates) ---------------------------------------------------------
    def matches(self, record: Mapping[str, Any], states: Sequence[str] = (), now=None) -> bool:
        """Evaluate on one version: ``record`` has model, version (number), state, created,
        author, id, params, metrics, tags (set), alias (set)."""
        now = time.time() if now is None else now
        return _eval(self.root, record, states, now)

    def values(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The actual value of every field the query mentions (for error messages)."""
        out: dict[str, Any] = {}
        for c in self.comparisons():
            out[c.name] = _lookup(c, record)
        return out


def parse(text: str, source: str = "query") -> Query:
    """Parse ``text``; a syntax error raises :class:`QuerySyntaxError` with its position."""
    if not isinstance(text, str):
        raise UsageError(f"{source}: expected a string, got {type(text).__name__}")
    return Query(text, _Parser(text, source).parse(), source)


_MISSING = object()


def _lookup(c: Cmp, record: Mapping[str, Any]) -> Any:
    if c.key is not None:
        d = record.get(c.field) or {}
        return d.get(c.key, _MISSING) if isinstance(d, Mapping) else _MISSING
    return record.get(c.field, _MISSING)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _compare(a: Any, op: str, b: Any) -> bool:
    if op == "=":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


def _eval(n: Node, rec: Mapping[str, Any], states: Sequence[str], now: float) -> bool:
    if isinstance(n, All):
        return True
    if isinstance(n, And):
        return all(_eval(x, rec, states, now) for x in n.items)
    if isinstance(n, Or):
        return any(_eval(x, rec, states, now) for x in n.items)
    if isinstance(n, Not):
        return not _eval(n.item, rec, states, now)
    c = n
    v = c.value
    if c.field in ("tags", "alias"):
        has = v in set(rec.get(c.field) or ())
        return has if c.op == "=" else not has
    actual = _lookup(c, rec)
    if actual is _MISSING or actual is None:
        return False
    if c.field == "state":
        if c.op in ("=", "!="):
            return _compare(actual, c.op, v)
        order = list(states)
        if actual not in order or v not in order:
            return False
        return _compare(order.index(actual), c.op, order.index(v))
    if c.field == "model" and "*" in v:
        hit = re.fullmatch(".*".join(re.escape(p) for p in v.split("*")), actual) is not None
        return hit if c.op == "=" else not hit
    if c.field == "id":
        hit = str(actual).startswith(v)
        return hit if c.op == "=" else not hit
    if c.field == "version":
        return _compare(int(actual), c.op, _version_number(v))
    if c.field == "created":
        return _in_range(float(actual), c.op, time_range(v, now))
    if isinstance(v, bool):
        return isinstance(actual, bool) and _compare(actual, c.op, v)
    if _is_number(v):
        return _is_number(actual) and _compare(actual, c.op, v)
    return isinstance(actual, str) and _compare(actual, c.op, v)


def _in_range(t: float, op: str, rng: tuple[float, float]) -> bool:
    a, b = rng
    if a == b:  # a point in time
        return _compare(t, op, a)
    inside = a <= t < b
    return {
        "=": inside,
        "!=": not inside,
        "<": t < a,
        "<=": t < b,
        ">": t >= b,
        ">=": t >= a,
    }[op]


# -- SQL back end (search) --------------------------------------------------------------
class JsonValue(ColumnElement):
    """The value under ``key`` of a JSON column, only if it has the JSON type ``kind``
    (``number``, ``string``, ``boolean``), else NULL; ``present`` tests that the key exists.

    Rendered per dialect so that a string never meets a number in a comparison (SQLite would
    compare them by type class, PostgreSQL would fail to cast) and the key is a bound value.
    """

    inherit_cache = True

    def __init__(self, column: ColumnElement, key: str, kind: str) -> None:
        self.column = column
        self.key = key
        self.kind = kind
        self.type = {
            "number": sa.Float(),
            "string": sa.String(),
            "boolean": sa.Boolean(),
            "present": sa.Boolean(),
        }[kind]

    # Part of the statement cache key: column, key and kind decide the SQL.
    _traverse_internals = [  # noqa: RUF012
        ("column", sa.sql.visitors.InternalTraversal.dp_clauseelement),
        ("key", sa.sql.visitors.InternalTraversal.dp_string),
        ("kind", sa.sql.visitors.InternalTraversal.dp_string),
    ]


@compiles(JsonValue)
def _json_sqlite(el: JsonValue, compiler, **kw) -> str:
    col = compiler.process(el.column, **kw)
    path = compiler.process(sa.literal(f'$."{el.key}"'), **kw)
    typ = f"json_type({col}, {path})"
    if el.kind == "present":
        return f"({typ} IS NOT NULL)"
    if el.kind == "number":
        return f"(CASE WHEN {typ} IN ('integer', 'real') THEN json_extract({col}, {path}) END)"
    if el.kind == "string":
        return f"(CASE WHEN {typ} = 'text' THEN json_extract({col}, {path}) END)"
    return f"(CASE {typ} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"


@compiles(JsonValue, "postgresql")
def _json_postgresql(el: JsonValue, compiler, **kw) -> str:
    col = compiler.process(el.column, **kw)
    key = compiler.process(sa.literal(el.key), **kw)
    typ = f"json_typeof(({col})::json -> {key})"
    if el.kind == "present":
        return f"((({col})::json -> {key}) IS NOT NULL)"
    if el.kind == "number":
        return (
            f"(CASE WHEN {typ} = 'number' THEN CAST(({col})::json ->> {key} AS DOUBLE PRECISION)"
            " END)"
        )
    if el.kind == "string":
        return f"(CASE WHEN {typ} = 'string' THEN ({col})::json ->> {key} END)"
    return f"(CASE WHEN {typ} = 'boolean' THEN CAST(({col})::json ->> {key} AS BOOLEAN) END)"


def _typed(field: str, key: str, kind: str) -> ColumnElement:
    v = s.versions.c
    if field == "params":
        return JsonValue(v.params, key, kind)
    # Metrics added later win over committed ones, as in a loaded Version.
    return sa.case(
        (JsonValue(v.extra_metrics, key, "present"), JsonValue(v.extra_metrics, key, kind)),
        else_=JsonValue(v.metrics, key, kind),
    )


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    return "string"


def _sql_cmp(left: ColumnElement, op: str, right: Any) -> ColumnElement:
    return {
        "=": left == right,
        "!=": left != right,
        "<": left < right,
        "<=": left <= right,
        ">": left > right,
        ">=": left >= right,
    }[op]


def _like_pattern(glob: str) -> str:
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def _has_ref(kind: str, name: str) -> ColumnElement:
    r = s.refs.c
    sub = sa.select(r.version_id).where(r.kind == kind, r.name == name)
    return s.versions.c.id.in_(sub)


def _compile(n: Node, states: Sequence[str], now: float) -> ColumnElement:
    if isinstance(n, All):
        return sa.true()
    if isinstance(n, And):
        return sa.and_(*(_compile(x, states, now) for x in n.items))
    if isinstance(n, Or):
        return sa.or_(*(_compile(x, states, now) for x in n.items))
    if isinstance(n, Not):
        return sa.not_(_compile(n.item, states, now))
    c = n
    v, vc, mo = c.value, s.versions.c, s.models.c
    if c.field in ("tags", "alias"):
        has = _has_ref("tag" if c.field == "tags" else "alias", v)
        return has if c.op == "=" else sa.not_(has)
    if c.field == "state":
        if c.op in ("=", "!="):
            return _sql_cmp(vc.state, c.op, v)
        order = list(states)
        pos = order.index(v) if v in order else -1
        if pos < 0:
            return sa.false()
        keep = [st for i, st in enumerate(order) if _compare(i, c.op, pos)]
        return vc.state.in_(keep) if keep else sa.false()
    if c.field == "model":
        if "*" in v:
            hit = mo.name.like(_like_pattern(v), escape="\\")
            return hit if c.op == "=" else sa.not_(hit)
        return _sql_cmp(mo.name, c.op, v)
    if c.field == "author":
        return _sql_cmp(vc.author, c.op, v)
    if c.field == "id":
        hit = vc.id.startswith(v, autoescape=True)
        return hit if c.op == "=" else sa.not_(hit)
    if c.field == "version":
        return _sql_cmp(vc.number, c.op, _version_number(v))
    if c.field == "created":
        a, b = time_range(v, now)
        if a == b:
            return _sql_cmp(vc.created, c.op, a)
        inside = sa.and_(vc.created >= a, vc.created < b)
        return {
            "=": inside,
            "!=": sa.not_(inside),
            "<": vc.created < a,
            "<=": vc.created < b,
            ">": vc.created >= b,
            ">=": vc.created >= a,
        }[c.op]
    left = _typed(c.field, c.key or "", _kind_of(v))
    if isinstance(v, bool):
        v = sa.literal(v, sa.Boolean())
    # NULL (missing key, other JSON type) counts as false, so that `not` stays two-valued and
    # agrees with the Python back end.
    return sa.func.coalesce(_sql_cmp(left, c.op, v), sa.false(), type_=sa.Boolean)


def compile_where(query: Query, states: Sequence[str] = (), now: float | None = None):
    """The query as a WHERE clause over ``versions`` joined with ``models``."""
    return _compile(query.root, states, time.time() if now is None else now)


@dataclass(frozen=True)
class OrderKey:
    field: str
    key: str | None
    descending: bool
    text: str


def parse_order(text: str) -> OrderKey:
    """``KEY`` or ``-KEY`` (descending), KEY one of ORDER_FIELDS (``metrics.acc``, ``created``)."""
    raw = text.strip()
    desc = raw.startswith("-")
    body = raw.lstrip("-+").strip()
    head, dot, key = body.partition(".")
    head = _SYNONYMS.get(head.lower(), head.lower())
    if head in KEYED and dot and key:
        return OrderKey(head, key, desc, raw)
    if head in ORDER_FIELDS and head not in KEYED and not dot:
        return OrderKey(head, None, desc, raw)
    raise UsageError(
        f"--order-by {text!r}: expected [-]KEY with KEY one of metrics.NAME, params.NAME, "
        "created, version, model, state, author"
    )


def order_clauses(key: OrderKey, states: Sequence[str] = ()) -> list[ColumnElement]:
    """ORDER BY terms for one key; versions without the value come last either way."""
    vc, mo = s.versions.c, s.models.c

    def direction(col: ColumnElement) -> ColumnElement:
        return col.desc() if key.descending else col.asc()

    if key.field in KEYED:
        out = []
        for kind in ("number", "string"):
            col = _typed(key.field, key.key or "", kind)
            out += [sa.case((col.is_(None), 1), else_=0), direction(col)]
        return out
    if key.field == "state":
        order = list(states)
        rank = sa.case({st: i for i, st in enumerate(order)}, value=vc.state, else_=len(order))
        return [direction(rank)]
    col = {"created": vc.created, "version": vc.number, "model": mo.name, "author": vc.author}[
        key.field
    ]
    return [direction(col)]
