"""FeeBuffer: fee lines read straight from the wire agree with msgspec + gather_lines.

FeeBuffer.parse reads the common shape of `feedetail` from its raw JSON or
MessagePack bytes and answers -1 for anything else (the pipeline then decodes
with msgspec). The property checked here: whatever parse accepts, it reads
exactly as decoding with the wire model and gather_lines does; it accepts the
lines hospital systems send (so the fast path is really taken); and it never
leaves anything behind when it declines.
"""
from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core_ext import _lines
from engine.contract.wire import JSON, MSGPACK, FeeLine

SETTINGS = settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
DECODE = {
    True: msgspec.json.Decoder(list[FeeLine] | None, float_hook=str),
    False: msgspec.msgpack.Decoder(list[FeeLine] | None),
}
FIELDS = ("feedetl_sn", "med_list_codg", "det_item_fee_sumamt", "cnt", "pric", "fee_ocur_time")


def by_gather(raw: bytes, json: bool):
    """What the msgspec path makes of a raw feedetail: (codes, sns, columns) or None when it refuses it."""
    try:
        lines = DECODE[json].decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    lines = lines or []
    n = len(lines)
    codes: list = []
    sns: list = []
    cols = (np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int32),
            np.zeros(n, np.uint8))
    _lines.gather_lines(lines, codes, sns, *cols)
    return codes, sns, cols


def check(raw: bytes, json: bool, must_accept: bool = False) -> int:
    """Parse `raw` after a line already held; assert agreement with by_gather; return parse's answer."""
    buf = _lines.FeeBuffer(2)
    held = msgspec.json.encode([dict(feedetl_sn="0", med_list_codg="HELD", det_item_fee_sumamt="1.00",
                                     cnt="1", pric="1", fee_ocur_time="2026-01-01 00:00:00")])
    assert buf.parse(held, True) == 1
    got = buf.parse(raw, json)
    want = by_gather(raw, json)
    if got < 0:
        assert not must_accept, raw
        assert buf.n == 1 and buf.codes == ["HELD"] and buf.sns == ["0"] and buf.n_bad == 0
        return got
    assert want is not None, "parse accepted what msgspec refuses"
    codes, sns, cols = want
    assert got == len(codes) and buf.n == 1 + got
    assert not cols[4].any(), "parse accepted a line gather_lines finds malformed"
    assert buf.codes[1:] == codes and buf.sns[1:] == sns
    assert [type(s) for s in buf.sns[1:]] == [type(s) for s in sns]
    for mine, theirs in zip(buf.arrays(), cols):
        assert mine[1:].tolist() == theirs.tolist() and mine.dtype == theirs.dtype
    return got


def common_line(i: int, **over) -> dict:
    line = dict(feedetl_sn=f"{i:04d}", med_list_codg=f"XA{i:05d}", medins_list_codg=f"L{i}",
                det_item_fee_sumamt="1144.32", cnt="2.0000", pric="572.160071", fee_ocur_time="2026-06-30 09:00:00")
    line.update(over)
    return line


@pytest.mark.parametrize("json", [True, False])
def test_common_shape_is_read_from_the_wire(json: bool) -> None:
    lines = [common_line(i) for i in range(40)] + [common_line(99, feedetl_sn=7, cnt=3, pric=-4,
                                                                det_item_fee_sumamt=12)]
    raw = (msgspec.json if json else msgspec.msgpack).encode(lines)
    assert check(raw, json, must_accept=True) == 41


@pytest.mark.parametrize("raw, accepted", [
    (b"[]", 0), (b" [ ] ", 0), (b"null", -1), (b"", -1), (b"{}", -1), (b"[1]", -1), (b"[{}]", -1),
    (b'[{"feedetl_sn":"1","med_list_codg":"A","det_item_fee_sumamt":1.25,"cnt":1,"pric":0.5,'
     b'"fee_ocur_time":"2026-01-01 00:00:00","x":[1]}]', -1),  # a nested value under another key
    (b'[{"feedetl_sn":"1","med_list_codg":"A","det_item_fee_sumamt":1.25,"cnt":1,"pric":0.5,'
     b'"fee_ocur_time":"2026-01-01 00:00:00","x":null,"y":true,"z":-0.5}]', 1),
    (b'[{"feedetl_sn":"1","med_list_codg":"A","det_item_fee_sumamt":1.25e0,"cnt":1,"pric":0.5,'
     b'"fee_ocur_time":"2026-01-01 00:00:00"}]', -1),  # an exponent
    (b'[{"feedetl_sn":"1","med_list_codg":"A\\u0042","det_item_fee_sumamt":"1","cnt":1,"pric":1,'
     b'"fee_ocur_time":"2026-01-01 00:00:00"}]', -1),  # an escape
    (b'[{"feedetl_sn":"1","med_list_codg":"A","med_list_codg":"B","det_item_fee_sumamt":"1","cnt":1,"pric":1,'
     b'"fee_ocur_time":"2026-01-01 00:00:00"}]', -1),  # a repeated field
    (b'[{"feedetl_sn":"1","med_list_codg":"A","det_item_fee_sumamt":"1","cnt":1,"pric":1,'
     b'"fee_ocur_time":"2026-01-01 00:00:00"},]', -1),  # a trailing comma
    (b'[{"feedetl_sn":"1","med_list_codg":"A","det_item_fee_sumamt":"1","cnt":1,"pric":1,'
     b'"fee_ocur_time":"2026-01-01 00:00:00"}] x', -1),
    (b'[{"feedetl_sn":1234567890123456789,"med_list_codg":"A","det_item_fee_sumamt":"1","cnt":1,"pric":1,'
     b'"fee_ocur_time":"2026-01-01 00:00:00"}]', -1),  # 19 digits
    (b'[{"feedetl_sn":-12,"med_list_codg":"A","det_item_fee_sumamt":-0,"cnt":"0.0001","pric":"-1.000001",'
     b'"fee_ocur_time":"2024-02-29 23:59:59"}]', 1),
    (b'[{"feedetl_sn":"1","med_list_codg":"A","det_item_fee_sumamt":"1","cnt":1,"pric":1,'
     b'"fee_ocur_time":"2023-02-29 00:00:00"}]', -1),  # no such day: a malformed line
])
def test_json_edges(raw: bytes, accepted: int) -> None:
    assert check(raw, True) == accepted


def mp_line(**over) -> dict:
    line = dict(feedetl_sn="1", med_list_codg="A", det_item_fee_sumamt="1.00", cnt="1", pric="1",
                fee_ocur_time="2026-01-01 00:00:00")
    line.update(over)
    return line


@pytest.mark.parametrize("lines, accepted", [
    ([mp_line(feedetl_sn=2**63 - 1, det_item_fee_sumamt=-(2**63), cnt=2**40, pric=-1)], 1),
    ([mp_line(det_item_fee_sumamt=2**64 - 1)], -1),  # beyond int64: the msgspec path decides
    ([mp_line(cnt=1.5)], -1), ([mp_line(cnt=True)], -1), ([mp_line(cnt=None)], -1),
    ([mp_line(x=b"\x00\xff", y=2.5, z=None, w=-(2**40))], 1),  # other keys with scalars are skipped
    ([mp_line(x={"a": 1})], -1), ([mp_line(x=[1])], -1),
    ([mp_line(med_list_codg="药")], -1), ([mp_line(med_list_codg="")], -1), ([mp_line(feedetl_sn="")], -1),
    ([mp_line(med_list_codg="C" * 300, feedetl_sn="S" * 70_000)], 1),  # str8 and str32 headers
    ([{k: v for k, v in mp_line().items() if k != "pric"}], -1),
    ([mp_line(**{f"k{i}": i for i in range(20)})], 1),  # a map16 header
    ([mp_line()] * 17, 17),  # an array16 header
])
def test_msgpack_edges(lines: list, accepted: int) -> None:
    assert check(msgspec.msgpack.encode(lines), False) == accepted


@pytest.mark.parametrize("cut", [1, 2, 5, 17, 40])
def test_msgpack_cut_short(cut: int) -> None:
    raw = msgspec.msgpack.encode([mp_line(), mp_line()])
    assert check(raw[:-cut], False) == -1


scalar = st.one_of(
    st.from_regex(r"-?[0-9]{1,20}(\.[0-9]{0,8})?", fullmatch=True), st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=4), st.floats(allow_nan=False), st.booleans(), st.none(),
    st.sampled_from(["2026-01-31 00:00:00", "2026-02-29 12:00:00", "2024-02-29 12:00:00", ""]),
)
line_dict = st.dictionaries(st.sampled_from(FIELDS + ("medins_list_codg", "x")), scalar, max_size=8)


@SETTINGS
@given(st.lists(st.one_of(line_dict, st.builds(lambda i, o: common_line(i, **o), st.integers(0, 9999),
                                                         line_dict)), max_size=6),
       st.booleans())
@example([common_line(1)], True)
def test_agrees_with_msgspec(lines: list, json: bool) -> None:
    raw = msgspec.json.encode(lines) if json else msgspec.msgpack.encode(lines)
    check(raw, json)


@SETTINGS
@given(st.binary(max_size=40), st.booleans())
def test_any_bytes(raw: bytes, json: bool) -> None:
    check(raw, json)


def test_gather_truncate_and_growth() -> None:
    buf = _lines.FeeBuffer(1)
    raw = msgspec.msgpack.encode([common_line(i) for i in range(100)])
    assert buf.parse(raw, False) == 100
    bad = buf.gather([FeeLine("1", "B", "x", "1", "1", "2026-01-01 00:00:00")])
    assert bad == 1 and buf.n == 101 and buf.n_bad == 1 and buf.codes[-1] == "B"
    assert buf.arrays()[4].tolist() == [0] * 100 + [1]
    buf.truncate(100)
    assert buf.n == 100 and buf.n_bad == 0 and len(buf.codes) == len(buf.sns) == 100
    with pytest.raises(ValueError):
        buf.truncate(101)
    assert buf.arrays()[0].tolist() == [114432] * 100


def test_codecs_route_settlements_through_it() -> None:
    """The pipeline's decoders leave feedetail raw for the buffer (and know which format it is)."""
    body = {"data": {"psn_no": "P"}, "feedetail": [common_line(1)]}
    for codec, mod in ((JSON, msgspec.json), (MSGPACK, msgspec.msgpack)):
        inp = codec.settle_raw.decode(mod.encode(body))
        assert isinstance(inp.feedetail, msgspec.Raw)
        assert _lines.FeeBuffer().parse(inp.feedetail, codec.is_json) == 1
