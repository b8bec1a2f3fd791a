"""Credentials, signatures, nonces and scope (docs/contract.md section 10), and the keys file."""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import pytest
from conftest import ROOT

from engine.contract.protocol import region_covers

from engine.hub.auth import (
    CLOCK_SKEW_S_MAX, NONCE_TTL_S, AuthRefused, Credential, Keyring, KeysError, NonceCache, add_key, describe,
    parse_keys, read_keys, revoke_key, signature, signed_headers, signed_values,
)

NOW_S = 1_764_900_000
HOSP = Credential("hosp-a", "t" * 32, "H43010000001", "")
PLATFORM = Credential("plat-hn", "p" * 40, "", "430000")


def ring() -> Keyring:
    return Keyring([HOSP, PLATFORM])


def verify(kr: Keyring, values: dict, now_s: float = NOW_S) -> Credential:
    return kr.verify(values["paasid"], values["timestamp"], values["nonce"], values["signature"], now_s)


def test_signature_is_the_gateways_text():
    want = hashlib.sha256(b"1700000000" + b"tok" + b"abcd1234" + b"1700000000").hexdigest()
    assert signature("1700000000", "tok", "abcd1234") == want


def test_signed_headers_are_the_gateways_names_of_the_signed_values():
    h = signed_headers(HOSP.paasid, HOSP.token, NOW_S, nonce="abcdefgh12")
    v = signed_values(HOSP.paasid, HOSP.token, NOW_S, nonce="abcdefgh12")
    assert h == {"x-tif-paasid": v["paasid"], "x-tif-timestamp": v["timestamp"], "x-tif-nonce": v["nonce"],
                 "x-tif-signature": v["signature"]}
    assert ring().verify(*(h[f"x-tif-{k}"] for k in ("paasid", "timestamp", "nonce", "signature")), NOW_S) is HOSP


def test_a_signed_request_is_accepted_once():
    kr = ring()
    v = signed_values(HOSP.paasid, HOSP.token, NOW_S, nonce="abcdefgh12")
    assert verify(kr, v) is HOSP
    with pytest.raises(AuthRefused, match="replayed"):
        verify(kr, v, NOW_S + 1)
    # The same nonce under another credential is that credential's own.
    assert verify(kr, signed_values(PLATFORM.paasid, PLATFORM.token, NOW_S, nonce="abcdefgh12")) is PLATFORM


def test_a_nonce_is_forgotten_after_its_window():
    kr = ring()
    assert verify(kr, signed_values(HOSP.paasid, HOSP.token, NOW_S, nonce="abcdefgh12")) is HOSP
    later = NOW_S + NONCE_TTL_S + 1
    assert verify(kr, signed_values(HOSP.paasid, HOSP.token, later, nonce="abcdefgh12"), later) is HOSP


@pytest.mark.parametrize("field,value,why", [
    ("paasid", "nobody", "unknown paasid"),
    ("paasid", None, "paasid missing"),
    ("nonce", "", "nonce missing"),
    ("signature", "0" * 64, "wrong signature"),
    ("signature", "Z" * 64, "wrong signature"),
    ("signature", "é" * 64, "wrong signature"),
    ("timestamp", "17e8", "Unix seconds"),
    ("nonce", "short", "8-64"),
    ("nonce", "abc-defgh", "8-64"),
])
def test_bad_values_are_refused(field, value, why):
    v = signed_values(HOSP.paasid, HOSP.token, NOW_S)
    v[field] = value
    with pytest.raises(AuthRefused, match=why):
        verify(ring(), v)


@pytest.mark.parametrize("skew_s,ok", [(CLOCK_SKEW_S_MAX, True), (CLOCK_SKEW_S_MAX + 1, False),
                                       (-CLOCK_SKEW_S_MAX, True), (-CLOCK_SKEW_S_MAX - 1, False)])
def test_clock_window(skew_s, ok):
    v = signed_values(HOSP.paasid, HOSP.token, NOW_S + skew_s)
    if ok:
        assert verify(ring(), v) is HOSP
    else:
        with pytest.raises(AuthRefused, match="clock"):
            verify(ring(), v)


def test_a_wrong_signature_does_not_use_up_the_nonce():
    kr = ring()
    v = signed_values(HOSP.paasid, HOSP.token, NOW_S, nonce="nonce0001")
    forged = dict(v, signature=signature(v["timestamp"], "x" * 32, v["nonce"]))
    with pytest.raises(AuthRefused, match="wrong signature"):
        verify(kr, forged)
    assert verify(kr, v) is HOSP


def test_nonces_are_bounded_per_credential():
    kr = Keyring([HOSP, PLATFORM], NonceCache(per_credential_max=3))
    for i in range(3):
        verify(kr, signed_values(HOSP.paasid, HOSP.token, NOW_S, nonce=f"nonce{i:04d}"))
    with pytest.raises(AuthRefused, match="more than 3"):
        verify(kr, signed_values(HOSP.paasid, HOSP.token, NOW_S, nonce="nonce9999"))
    # The bound is the credential's own: others still get in, and it does once its nonces expire.
    assert verify(kr, signed_values(PLATFORM.paasid, PLATFORM.token, NOW_S)) is PLATFORM
    later = NOW_S + NONCE_TTL_S
    assert verify(kr, signed_values(HOSP.paasid, HOSP.token, later), later) is HOSP
    assert len(kr.nonces) == 2


def test_scope():
    assert HOSP.allows("H43010000001", "430100")
    assert not HOSP.allows("H43010000002", "430100")
    assert PLATFORM.allows("H43010000002", "430100")  # a province covers its cities
    assert not PLATFORM.allows("H44010000001", "440100")
    assert not PLATFORM.allows("H43010000001", None)  # an unknown institution is in nobody's region
    assert region_covers("430100", "430100") and region_covers("430100", "430102")
    assert not region_covers("430102", "430103") and not region_covers("430100", "430200")


def test_reload_keeps_the_nonces_of_kept_credentials():
    kr = ring()
    v = signed_values(HOSP.paasid, HOSP.token, NOW_S)
    verify(kr, v)
    kr.replace([HOSP])
    with pytest.raises(AuthRefused, match="replayed"):
        verify(kr, v)
    with pytest.raises(AuthRefused, match="unknown paasid"):
        verify(kr, signed_values(PLATFORM.paasid, PLATFORM.token, NOW_S))


GOOD = "paasid,token,fixmedins_code,admdvs\nhosp-a,{t},H1,\nplat,{t},,430000\n".format(t="k" * 16)


@pytest.mark.parametrize("text,where", [
    ("paasid,token,code,admdvs\n", "keys.csv:1: header"),
    (GOOD + "hosp-a,{},H2,\n".format("k" * 16), "keys.csv:4: paasid: hosp-a already on line 2"),
    (GOOD + "x,short,H2,\n", "keys.csv:4: token"),
    (GOOD + "x,{},H 2,\n".format("k" * 16), "keys.csv:4: fixmedins_code"),
    (GOOD + "x,{},H2,430000\n".format("k" * 16), "keys.csv:4: fixmedins_code: exactly one"),
    (GOOD + "x,{},,\n".format("k" * 16), "keys.csv:4: fixmedins_code: exactly one"),
    (GOOD + "x,{},,4300\n".format("k" * 16), "keys.csv:4: admdvs"),
    (GOOD + "x,{},H2\n".format("k" * 16), "keys.csv:4: row"),
    (GOOD + "x y,{},H2,\n".format("k" * 16), "keys.csv:4: paasid"),
    (GOOD + "x,{},H2,\n".format("k" * 129), "keys.csv:4: token"),
])
def test_a_bad_keys_file_names_line_and_field(text, where):
    assert len(parse_keys(GOOD)) == 2
    with pytest.raises(KeysError) as e:
        parse_keys(text)
    assert str(e.value).startswith(where), str(e.value)


def test_keys_file_managed(tmp_path):
    path = str(tmp_path / "keys.csv")
    token = add_key(path, "hosp-a", fixmedins_code="H1")
    add_key(path, "plat", admdvs="430000")
    assert len(token) == 64 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    kf = read_keys(path)
    assert [c.paasid for c in kf.credentials] == ["hosp-a", "plat"] and kf.warnings == []
    assert kf.credentials[0].token == token
    assert token not in describe(kf.credentials[0])
    with pytest.raises(KeysError, match="already exists"):
        add_key(path, "hosp-a", fixmedins_code="H2")
    with pytest.raises(KeysError, match="exactly one"):
        add_key(path, "both", fixmedins_code="H2", admdvs="430000")
    revoke_key(path, "hosp-a")
    assert [c.paasid for c in read_keys(path).credentials] == ["plat"]
    with pytest.raises(KeysError, match="no credential"):
        revoke_key(path, "hosp-a")
    assert sorted(os.listdir(tmp_path)) == ["keys.csv"]  # no temporary file left behind


def test_keys_file_readable_by_others_is_warned_about(tmp_path):
    path = tmp_path / "keys.csv"
    path.write_text(GOOD)
    path.chmod(0o644)
    kf = read_keys(str(path))
    assert len(kf.credentials) == 2 and "chmod 600" in kf.warnings[0]


@pytest.mark.parametrize("content,why", [(None, "No such file"), (b"\xff\xfe", "not UTF-8")])
def test_unreadable_keys_file_is_one_line(tmp_path, content, why):
    path = tmp_path / "keys.csv"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(KeysError, match=why) as e:
        read_keys(str(path))
    assert "\n" not in str(e.value)


def _yidi(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT})


def test_yidi_keys_add_list_revoke(tmp_path):
    path = str(tmp_path / "keys.csv")
    r = _yidi("keys", "add", "--file", path, "--paasid", "hosp-a", "--fixmedins-code", "H43010000001")
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert len(token) == 64 and "shown this once" in r.stderr
    assert _yidi("keys", "add", "--file", path, "--paasid", "plat-hn", "--admdvs", "430000").returncode == 0
    listed = _yidi("keys", "list", "--file", path)
    assert listed.returncode == 0 and token not in listed.stdout
    assert [ln.split("\t")[:2] for ln in listed.stdout.splitlines()] == [
        ["hosp-a", "institution H43010000001"], ["plat-hn", "region 430000"]]
    assert read_keys(path).credentials[0].token == token
    assert _yidi("keys", "revoke", "--file", path, "--paasid", "hosp-a").returncode == 0
    assert [c.paasid for c in read_keys(path).credentials] == ["plat-hn"]


@pytest.mark.parametrize("args,why", [
    (("add", "--paasid", "x"), "exactly one of"),
    (("add", "--paasid", "x", "--fixmedins-code", "H1", "--admdvs", "430000"), "exactly one of"),
    (("add", "--paasid", "x", "--admdvs", "43"), "admdvs"),
    (("revoke", "--paasid", "nobody"), "no credential"),
    (("add",), "needs --paasid"),
])
def test_yidi_keys_mistakes_are_one_line(tmp_path, args, why):
    path = str(tmp_path / "keys.csv")
    assert _yidi("keys", "add", "--file", path, "--paasid", "p", "--admdvs", "430000").returncode == 0
    r = _yidi("keys", args[0], "--file", path, *args[1:])
    assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr, r.stderr
