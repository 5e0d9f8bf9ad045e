from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tvc.errors import UnknownRefError, UsageError
from tvc.repo.names import MAX_VERSION, check_model_name, check_ref_name, parse_ref
from tvc.repo.paths import check_stored_path


def test_parse_ref_forms():
    assert parse_ref("bert") == parse_ref("bert")
    r = parse_ref("bert")
    assert (r.model, r.rev, r.ancestors, r.explicit) == ("bert", "main", 0, False)
    assert parse_ref("team/bert@v3").rev == "v3"
    assert parse_ref("bert@main~2").ancestors == 2
    assert parse_ref("bert~~").ancestors == 2
    assert parse_ref("bert@v3~1~2").ancestors == 3
    assert str(parse_ref("bert@exp~1")) == "bert@exp~1"


@pytest.mark.parametrize(
    "bad", ["", "Bert", "bert@", "bert@a b", "../x", "a/b/c", "bert@x@y", " bert", "-x"]
)
def test_parse_ref_rejects(bad):
    with pytest.raises(UsageError):
        parse_ref(bad)


def test_ref_names():
    check_ref_name("release-1", "tag")
    with pytest.raises(UsageError):
        check_ref_name("v3", "tag")
    with pytest.raises(UsageError):
        check_ref_name("a/b", "branch")
    with pytest.raises(UsageError):
        check_model_name("a..b")


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../b", "a//b", "", ".", "a\\b"])
def test_stored_paths_rejected(bad):
    with pytest.raises(Exception, match="unsafe path"):
        check_stored_path(bad)


def test_a_version_number_beyond_64_bits_names_nothing():
    """It would reach the database as an integer SQLite cannot hold (a traceback, before)."""
    assert parse_ref(f"m@v{MAX_VERSION}").rev == f"v{MAX_VERSION}"
    with pytest.raises(UnknownRefError, match="no version v99999999999999999999"):
        parse_ref("m@v99999999999999999999")
    with pytest.raises(UsageError):
        parse_ref("M@v99999999999999999999")  # the model name is still checked first


@given(st.text(max_size=40) | st.from_regex(r"\Am@v[0-9]{1,30}(~[0-9]{0,25})?\Z"))
def test_parse_ref_never_crashes(text):
    try:
        r = parse_ref(text)
    except UsageError:
        return
    except UnknownRefError:
        assert int(text.split("@v")[1].split("~")[0]) > MAX_VERSION
        return
    assert r.ancestors >= 0 and r.model
