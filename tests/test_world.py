"""World loading: the public world loads; a world that breaks section 2 is refused naming file, line, field."""
import json
import os
import shutil

import pytest

from conftest import VECTOR_WORLD
from engine.world.loader import WorldError, load_world


def test_public_world_loads(vector_world):
    w = vector_world
    assert len(w.inst_code) == 54
    assert len(w.cat_code) == 873
    assert w.n_persons == 160
    assert len(w.policies) == 17
    assert w.prepay_fen["110000"] == 922793258
    # each (prov, code)'s versions are adjacent and in date order (what the index needs)
    keys = list(zip(w.cat_prov.tolist(), w.cat_code.to_pylist()))
    seen, prev = set(), None
    for i, k in enumerate(keys):
        if k != prev:
            assert k not in seen, f"versions of {k} are not adjacent"
            seen.add(k)
        else:
            assert w.cat_begn[i] > w.cat_end[i - 1]
        prev = k


@pytest.fixture
def world_copy(tmp_path):
    d = tmp_path / "world"
    shutil.copytree(VECTOR_WORLD, d)
    return d


def _edit_csv(path, line_no, field, value):
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[line_no - 1].split(",")
    cells[header.index(field)] = value
    lines[line_no - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "file,line,field,value,what",
    [
        ("persons.csv", 5, "balc", "12.345", "decimal"),
        ("persons.csv", 7, "insutype", "320", "one of"),
        ("persons.csv", 4, "insuplc_admdvs", "990100", "unknown province"),
        ("persons.csv", 3, "acc_year", "20x6", "not a year"),
        ("catalogue.csv", 10, "chrgitm_lv", "04", "one of"),
        ("catalogue.csv", 12, "selfpay_prop", "1.5000", "ratio"),
        ("catalogue.csv", 6, "begndate", "2020-13-01", "date"),
        ("catalogue.csv", 8, "prov_admdvs", "440100", "province code"),
        ("institutions.csv", 9, "hosp_lv", "4", "one of"),
        ("filings.csv", 6, "filing_type", "TEMP_HOLIDAY", "one of"),
        ("filings.csv", 3, "psn_no", "PNOBODY", "unknown person"),
        ("chronic.csv", 4, "hifp_cd", "-1.00", "decimal"),
        ("prepay.csv", 2, "amount", "abc", "decimal"),
    ],
)
def test_bad_cell_is_named(world_copy, file, line, field, value, what):
    _edit_csv(world_copy / file, line, field, value)
    with pytest.raises(WorldError) as ei:
        load_world(str(world_copy))
    e = ei.value
    assert (e.file, e.line, e.field) == (file, line, field), str(e)
    assert what in str(e)
    assert f"{file}:{line}: {field}:" in str(e)


def test_duplicate_person_is_refused(world_copy):
    p = world_copy / "persons.csv"
    lines = p.read_text().splitlines()
    lines.append(lines[3])
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(WorldError) as ei:
        load_world(str(world_copy))
    assert ei.value.file == "persons.csv" and ei.value.line == len(lines) and "duplicate" in str(ei.value)


def test_overlapping_catalogue_versions_are_refused(world_copy):
    p = world_copy / "catalogue.csv"
    lines = p.read_text().splitlines()
    # line 4 is XA94... valid until 2026-06-30; its second version begins 2026-07-01 (line 5)
    assert lines[3].split(",")[1] == lines[4].split(",")[1]
    _edit_csv(p, 5, "begndate", "2026-06-30")
    with pytest.raises(WorldError) as ei:
        load_world(str(world_copy))
    assert (ei.value.file, ei.value.field) == ("catalogue.csv", "begndate")
    assert ei.value.line in (4, 5) and "overlaps" in str(ei.value)


def test_missing_column(world_copy):
    p = world_copy / "prepay.csv"
    p.write_text("prov_admdvs,amt\n110000,1.00\n")
    with pytest.raises(WorldError) as ei:
        load_world(str(world_copy))
    assert (ei.value.file, ei.value.line, ei.value.field) == ("prepay.csv", 1, "amount")


@pytest.mark.parametrize(
    "edit,field,what",
    [
        (lambda p: p["reduction"].update(referral="0.1500"), "reduction.referral", "national limit"),
        (lambda p: p["reduction"].update(temp_other="0.2500"), "reduction.temp_other", "national limit"),
        (lambda p: p["outpatient"]["ratio"].update({"2": "1.2000"}), "outpatient.ratio.2", "ratio"),
        (lambda p: p["inpatient"]["tiers"].pop("3"), "inpatient.tiers", "levels"),
        (lambda p: p["inpatient"]["tiers"].update({"1": [["500.00", "0.5"], ["400.00", "0.6"], [None, "0.7"]]}),
         "inpatient.tiers.1[1]", "rise"),
        (lambda p: p["inpatient"]["tiers"].update({"1": [["500.00", "0.5"]]}), "inpatient.tiers.1[0]", "null"),
        (lambda p: p.update(annual_cap="12.345"), "annual_cap", "decimals"),
    ],
)
def test_bad_policy_is_named(world_copy, edit, field, what):
    p = world_copy / "policies.json"
    pols = json.loads(p.read_text())
    edit(pols[2])
    p.write_text(json.dumps(pols))
    with pytest.raises(WorldError) as ei:
        load_world(str(world_copy))
    e = ei.value
    assert e.file == "policies.json"
    assert e.field.startswith("policy[2]") and e.field.endswith(field), str(e)
    assert what in str(e)


def test_unfiled_null_is_allowed(world_copy):
    p = world_copy / "policies.json"
    pols = json.loads(p.read_text())
    pols[0]["reduction"]["unfiled"] = None
    p.write_text(json.dumps(pols))
    w = load_world(str(world_copy))
    assert w.policies[0].reduction_bp["unfiled"] is None


def test_missing_file(world_copy):
    os.remove(world_copy / "chronic.csv")
    with pytest.raises(WorldError) as ei:
        load_world(str(world_copy))
    assert ei.value.file == "chronic.csv"


# ---------------------------------------------------------------- the column kernels


from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _column(values):
    import numpy as np
    import pyarrow as pa

    from engine.world.loader import _string_buffers

    a = pa.array(values, pa.string())
    offsets, data = _string_buffers(a)
    validity = a.buffers()[0]
    valid = np.frombuffer(validity, np.uint8) if validity is not None else np.zeros(0, np.uint8)
    return offsets, data, valid


_cells = st.one_of(
    st.none(),
    st.from_regex(r"[0-9]{1,14}(\.[0-9]{0,7})?", fullmatch=True),
    st.text(alphabet="0123456789.-+e ", max_size=8),
)


@given(st.lists(_cells, min_size=1, max_size=30), st.integers(1, 6), st.booleans())
def test_decimal_column_kernel_matches_money(values, places, optional):
    import re

    import numpy as np

    from core_ext import _columns
    from engine.contract import money
    from engine.world.loader import MONEY_DIGITS_MAX

    offsets, data, valid = _column(values)
    out = np.empty(len(values), np.int64)
    bad = _columns.parse_decimal_column(offsets, data, valid, places, MONEY_DIGITS_MAX, optional, out)
    want_bad = -1
    for i, v in enumerate(values):
        if v is None:
            if optional:
                assert out[i] == -1
                continue
            want_bad = i
            break
        ok = re.fullmatch(rf"[0-9]{{1,{MONEY_DIGITS_MAX}}}(\.[0-9]{{1,{places}}})?", v) is not None
        if not ok:
            want_bad = i
            break
        assert out[i] == money.parse_scaled(v, places)
    assert bad == want_bad


@given(st.lists(st.one_of(st.dates().map(str), st.text(alphabet="0123456789-", max_size=11)), min_size=1, max_size=30))
def test_date_column_kernel_matches_money(values):
    import numpy as np

    from core_ext import _columns
    from engine.contract import money

    offsets, data, valid = _column(values)
    out = np.empty(len(values), np.int32)
    bad = _columns.parse_date_column(offsets, data, valid, False, 0, out)
    want_bad = -1
    for i, v in enumerate(values):
        try:
            d = money.parse_day(v)
        except money.NumberError:
            want_bad = i
            break
        if d < -(2**31) or not v[:4].isdigit() or int(v[:4]) < 1:
            want_bad = i
            break
        assert out[i] == d
    assert bad == want_bad
