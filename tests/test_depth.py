"""core_ext._depth: the nesting depth of raw JSON and MessagePack, against a plain model."""
from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core_ext._depth import DEPTH_LIMIT_MAX, json_depth, msgpack_depth

# Strings full of the characters a bracket counter could be fooled by.
tricky = st.text(alphabet='[]{}"\\,:ab\u4e2d\x00', max_size=12)
scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False) | tricky \
    | st.binary(max_size=40)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky, inner, max_size=4),
                      max_leaves=40)


def depth(v) -> int:
    """The model: containers enclosing the deepest value, the outermost counting one."""
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    return 0


def nest(levels: int):
    v: object = "x"
    for i in range(levels):
        v = [v] if i % 2 else {"k": v}
    return v


@given(values, st.integers(0, 12))
def test_agrees_with_the_model(v, limit):
    want = min(depth(v), limit + 1)
    assert msgpack_depth(msgspec.msgpack.encode(v), limit) == want
    text = msgspec.json.encode(v) if not _has_bytes(v) else None
    if text is not None:
        assert json_depth(text, limit) == want


def _has_bytes(v) -> bool:
    if isinstance(v, (bytes, float)):
        return True  # JSON has no bytes; float infinities have no JSON text
    if isinstance(v, list):
        return any(_has_bytes(x) for x in v)
    if isinstance(v, dict):
        return any(_has_bytes(x) for x in v.values())
    return False


@pytest.mark.parametrize("levels", [1, 31, 32, 33, 1000, 100_000])
def test_deep_bodies_stop_at_the_limit(levels):
    mp = b"\x91" * levels + b"\x01"  # arrays of one, nested
    js = b"[" * levels + b"1" + b"]" * levels
    assert msgpack_depth(mp, 32) == min(levels, 33)
    assert json_depth(js, 32) == min(levels, 33)
    if levels <= 500:  # msgspec's encoder recurses
        assert msgpack_depth(msgspec.msgpack.encode(nest(levels)), 32) == min(levels, 33)
        assert json_depth(json.dumps(nest(levels)).encode(), 32) == min(levels, 33)


@given(st.binary(max_size=200), st.integers(0, 40))
def test_any_bytes_get_an_answer_within_bounds(data, limit):
    assert -1 <= msgpack_depth(data, limit) <= limit + 1
    assert 0 <= json_depth(data, limit) <= limit + 1


@given(values)
def test_a_cut_message_is_never_deeper_than_it_is(v):
    body = msgspec.msgpack.encode(v)
    for cut in range(len(body)):
        assert msgpack_depth(body[:cut], 32) <= max(depth(v), 0) or msgpack_depth(body[:cut], 32) == -1


def test_lengths_past_the_end_are_cut_short():
    assert msgpack_depth(b"\xdd\xff\xff\xff\xff", 32) == -1  # array32 of 4 billion, nothing after
    assert msgpack_depth(b"\x91\xdb\xff\xff\xff\xff", 32) == -1  # str32 longer than the body
    assert msgpack_depth(b"\xc1", 32) == -1  # a type byte never used
    with pytest.raises(ValueError):
        msgpack_depth(b"\x90", DEPTH_LIMIT_MAX)
