"""Credentials, request signatures and scope (docs/contract.md section 10).

A credential is one row of the keys file `paasid,token,fixmedins_code,admdvs`:
a hospital system's (fixmedins_code set: it acts for that institution only) or
a platform's (admdvs set: it acts for every institution whose region it covers,
with the "covers" rule of section 4). A request is signed with the headers that
hospital systems already send to the national gateway; `Keyring.verify` checks
them in a fixed order and remembers each accepted nonce for NONCE_TTL_S, in
memory bounded per credential, so that a replayed request is refused.

The keys file is also managed here (`yidi keys add|list|revoke`): it is written
whole to a temporary file with mode 0600 and renamed over the old one, so a
reader (a hub reloading it) never sees half a file.
"""
from __future__ import annotations

import collections
import csv
import hashlib
import hmac
import io
import os
import re
import secrets
import stat
import tempfile
from dataclasses import dataclass

from engine.contract.credential import Credential
from engine.contract.textfile import TextFileError, read_text
from engine.hub.reload import ReloadRefused

KEYS_HEADER = ("paasid", "token", "fixmedins_code", "admdvs")
TOKEN_CHARS_MIN, TOKEN_CHARS_MAX = 16, 128
PAASID_CHARS_MAX = 64
TOKEN_NEW_BYTES = 32  # a new token: 64 hex digits from the operating system's random source
CLOCK_SKEW_S_MAX = 300  # a timestamp further than this from the hub's clock is refused
NONCE_TTL_S = 600  # a nonce is remembered this long per paasid
NONCES_PER_CREDENTIAL_MAX = 1 << 20  # remembered nonces per paasid: bounds the memory a credential can take
KEYS_FILE_BYTES_MAX = 16 << 20

_NONCE = re.compile(r"[A-Za-z0-9]{8,64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_ADMDVS = re.compile(r"[0-9]{6}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")

# The four values of a signed request, by their HTTP header names; over TCP the
# 9001 envelope carries them as fields of these names without the prefix.
HEADER_PAASID = "x-tif-paasid"
HEADER_TIMESTAMP = "x-tif-timestamp"
HEADER_NONCE = "x-tif-nonce"
HEADER_SIGNATURE = "x-tif-signature"
SIGNED_FIELDS = ("paasid", "timestamp", "nonce", "signature")


class KeysError(Exception):
    """A keys file that cannot be used; the message is one line naming file, line and field."""


# Why a request was refused E_AUTH: the label of yidi_auth_refused_total, a small fixed set.
REFUSED_MISSING = "missing"  # a header or field absent or empty
REFUSED_UNKNOWN = "unknown_paasid"
REFUSED_TIMESTAMP = "timestamp"  # not Unix seconds, or too far from the hub's clock
REFUSED_NONCE = "nonce"  # not 8-64 characters of [A-Za-z0-9]
REFUSED_SIGNATURE = "signature"
REFUSED_REPLAY = "replay"  # a nonce already used within NONCE_TTL_S
REFUSED_NONCE_BUDGET = "nonce_budget"  # NONCES_PER_CREDENTIAL_MAX used within NONCE_TTL_S
REFUSED_FIRST_FRAME = "first_frame"  # TCP: the first frame is not a 9001
REFUSED_REVOKED = "revoked"  # TCP: the connection's credential was revoked or changed by a reload
REFUSED_REASONS = (REFUSED_MISSING, REFUSED_UNKNOWN, REFUSED_TIMESTAMP, REFUSED_NONCE, REFUSED_SIGNATURE,
                   REFUSED_REPLAY, REFUSED_NONCE_BUDGET, REFUSED_FIRST_FRAME, REFUSED_REVOKED)


class AuthRefused(Exception):
    """E_AUTH: the request is not signed by a known credential (the message says what failed, never
    the token; `reason` is one of REFUSED_REASONS)."""

    def __init__(self, message: str, reason: str):
        assert reason in REFUSED_REASONS, reason
        super().__init__(message)
        self.reason = reason


def _printable(text: str) -> bool:
    """Printable ASCII without spaces (0x21-0x7e)."""
    return text.isascii() and text.isprintable() and " " not in text and text != ""


def signature(timestamp: str, token: str, nonce: str) -> str:
    """Lowercase hex SHA-256 of timestamp + token + nonce + timestamp."""
    return hashlib.sha256(f"{timestamp}{token}{nonce}{timestamp}".encode()).hexdigest()


def signed_values(paasid: str, token: str, now_s: int, nonce: str | None = None) -> dict[str, str]:
    """The four signed values for a request made now (clients: the demo, the load tools, tests)."""
    nonce = nonce or secrets.token_hex(16)
    ts = str(int(now_s))
    return {"paasid": paasid, "timestamp": ts, "nonce": nonce, "signature": signature(ts, token, nonce)}


def signed_headers(paasid: str, token: str, now_s: int, nonce: str | None = None) -> dict[str, str]:
    """signed_values as the HTTP headers of the national gateway."""
    v = signed_values(paasid, token, now_s, nonce)
    return {HEADER_PAASID: v["paasid"], HEADER_TIMESTAMP: v["timestamp"], HEADER_NONCE: v["nonce"],
            HEADER_SIGNATURE: v["signature"]}


class NonceCache:
    """The nonces each paasid used in the last NONCE_TTL_S seconds, at most `per_credential_max` each.

    Nonces are kept in arrival order with their expiry, so expired ones are
    dropped from the front. A credential that has used its whole bound within
    the window is refused until its oldest nonces expire: its own requests wait,
    nobody else's.
    """

    def __init__(self, ttl_s: int = NONCE_TTL_S, per_credential_max: int = NONCES_PER_CREDENTIAL_MAX):
        self.ttl_s = ttl_s
        self.per_credential_max = per_credential_max
        self._by_paasid: dict[str, collections.OrderedDict[str, float]] = {}

    def _window(self, paasid: str, now_s: float) -> collections.OrderedDict[str, float]:
        seen = self._by_paasid.setdefault(paasid, collections.OrderedDict())
        while seen:
            nonce, expiry_s = next(iter(seen.items()))
            if expiry_s > now_s:
                break
            del seen[nonce]
        return seen

    def use(self, paasid: str, nonce: str, now_s: float) -> None:
        """Remember the nonce, or raise AuthRefused when it was used within the window."""
        seen = self._window(paasid, now_s)
        if nonce in seen:
            raise AuthRefused("nonce already used (a replayed request)", REFUSED_REPLAY)
        if len(seen) >= self.per_credential_max:
            raise AuthRefused(f"more than {self.per_credential_max} requests in {self.ttl_s} s for this paasid",
                              REFUSED_NONCE_BUDGET)
        seen[nonce] = now_s + self.ttl_s

    def forget(self, paasids: set[str]) -> None:
        """Drop the windows of credentials that are gone (after a reload)."""
        for p in list(self._by_paasid):
            if p not in paasids:
                del self._by_paasid[p]

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_paasid.values())


class Keyring:
    """The credentials in force and the nonces they used."""

    def __init__(self, credentials: list[Credential], nonces: NonceCache | None = None):
        self.by_paasid = {c.paasid: c for c in credentials}
        self.nonces = nonces if nonces is not None else NonceCache()

    def replace(self, credentials: list[Credential]) -> None:
        """Put a reloaded file in force; the nonces of the credentials kept are kept.

        A credential whose row did not change keeps its very object, so a TCP connection
        acting for it (engine.hub.tcp checks `by_paasid.get(paasid) is cred`) carries on;
        one revoked, or changed in token or scope, is refused at its next frame.
        """
        old = self.by_paasid
        self.by_paasid = {c.paasid: (old[c.paasid] if old.get(c.paasid) == c else c) for c in credentials}
        self.nonces.forget(set(self.by_paasid))

    def __len__(self) -> int:
        return len(self.by_paasid)

    def verify(self, paasid: object, timestamp: object, nonce: object, sig: object, now_s: float) -> Credential:
        """The credential that signed these values, or AuthRefused saying what failed.

        The nonce is remembered only once the signature holds, so nobody without
        the token can use up another credential's nonces.
        """
        for name, v in zip(SIGNED_FIELDS, (paasid, timestamp, nonce, sig)):
            if not isinstance(v, str) or not v:
                raise AuthRefused(f"{name} missing", REFUSED_MISSING)
        cred = self.by_paasid.get(paasid)
        if cred is None:
            raise AuthRefused("unknown paasid", REFUSED_UNKNOWN)
        if not _TIMESTAMP.fullmatch(timestamp):
            raise AuthRefused("timestamp is not Unix seconds", REFUSED_TIMESTAMP)
        if abs(int(timestamp) - now_s) > CLOCK_SKEW_S_MAX:
            raise AuthRefused(f"timestamp more than {CLOCK_SKEW_S_MAX} s from the hub's clock", REFUSED_TIMESTAMP)
        if not _NONCE.fullmatch(nonce):
            raise AuthRefused("nonce must be 8-64 characters of A-Z, a-z, 0-9", REFUSED_NONCE)
        want = signature(timestamp, cred.token, nonce)
        # Compared as bytes in constant time; a value of another shape is compared
        # too, against itself, so the time taken never depends on the token.
        given = sig.encode("utf-8", "surrogatepass") if _SIGNATURE.fullmatch(sig) else want.encode()[::-1]
        if not hmac.compare_digest(want.encode(), given):
            raise AuthRefused("wrong signature", REFUSED_SIGNATURE)
        self.nonces.use(paasid, nonce, now_s)
        return cred


# ---------------------------------------------------------------- the keys file

@dataclass(frozen=True, slots=True)
class KeysFile:
    credentials: list[Credential]
    warnings: list[str]  # said at start and on reload (a file readable by others)


def _row_error(path: str, line: int, field: str, what: str) -> KeysError:
    return KeysError(f"{path}:{line}: {field}: {what}")


def parse_keys(text: str, path: str = "keys.csv") -> list[Credential]:
    """The credentials of a keys file's text; KeysError naming the line and field of the first bad cell."""
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header) != KEYS_HEADER:
        raise _row_error(path, 1, "header", f"must be {','.join(KEYS_HEADER)}")
    out: list[Credential] = []
    seen: dict[str, int] = {}
    for i, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(KEYS_HEADER):
            raise _row_error(path, i, "row", f"has {len(row)} cells, want {len(KEYS_HEADER)}")
        paasid, token, code, admdvs = row
        if not _printable(paasid) or len(paasid) > PAASID_CHARS_MAX:
            raise _row_error(path, i, "paasid", f"must be 1-{PAASID_CHARS_MAX} printable ASCII characters without spaces")
        if paasid in seen:
            raise _row_error(path, i, "paasid", f"{paasid} already on line {seen[paasid]}")
        seen[paasid] = i
        if not (_printable(token) and TOKEN_CHARS_MIN <= len(token) <= TOKEN_CHARS_MAX):
            raise _row_error(path, i, "token", f"must be {TOKEN_CHARS_MIN}-{TOKEN_CHARS_MAX} printable ASCII "
                                               "characters without spaces")
        if bool(code) == bool(admdvs):
            raise _row_error(path, i, "fixmedins_code", "exactly one of fixmedins_code and admdvs must be set")
        if code and not _printable(code):
            raise _row_error(path, i, "fixmedins_code", "must be printable ASCII without spaces")
        if admdvs and not _ADMDVS.fullmatch(admdvs):
            raise _row_error(path, i, "admdvs", "must be a 6-digit region code")
        out.append(Credential(paasid, token, code, admdvs))
    return out


def read_keys(path: str) -> KeysFile:
    """Read and validate a keys file; KeysError (one line) when it cannot be used."""
    try:
        text, st = read_text(path, KEYS_FILE_BYTES_MAX)
    except TextFileError as e:
        raise KeysError(str(e)) from None
    warnings = []
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        warnings.append(f"{path} can be read or written by other users (mode {stat.S_IMODE(st.st_mode):o}): "
                        "chmod 600 it, its tokens are secrets")
    return KeysFile(parse_keys(text, path), warnings)


def write_keys(path: str, credentials: list[Credential]) -> None:
    """Write a whole keys file (mode 0600, renamed into place); refuses what the hub would refuse."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(KEYS_HEADER)
    for c in credentials:
        w.writerow((c.paasid, c.token, c.fixmedins_code, c.admdvs))
    parse_keys(buf.getvalue(), path)  # what is written is always a file the hub accepts
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".keys-", dir=folder)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class KeysSource:
    """The keys file behind the hub's Keyring, reloaded on SIGHUP or POST /admin/reload
    (engine.hub.reload.Reloadable): a good file replaces the credentials in force, a bad one
    is refused and the credentials in force are kept."""

    name = "keys"

    def __init__(self, path: str, keyring: Keyring):
        self.path = path
        self.keyring = keyring

    @classmethod
    def open(cls, path: str) -> tuple["KeysSource", list[str]]:
        """The source of a keys file read now, and the file's warnings; KeysError when it cannot be used."""
        kf = read_keys(path)
        return cls(path, Keyring(kf.credentials)), kf.warnings

    def load(self) -> KeysFile:
        try:
            return read_keys(self.path)
        except KeysError as e:
            raise ReloadRefused(str(e)) from None

    def apply(self, loaded: KeysFile) -> dict:
        self.keyring.replace(loaded.credentials)
        out: dict = {"credentials": len(self.keyring), "file": self.path}
        if loaded.warnings:
            out["warnings"] = list(loaded.warnings)
        return out


def _existing(path: str) -> list[Credential]:
    return read_keys(path).credentials if os.path.exists(path) else []


def add_key(path: str, paasid: str, *, fixmedins_code: str = "", admdvs: str = "") -> str:
    """Add a credential with a new random token and return the token (shown once)."""
    creds = _existing(path)
    if any(c.paasid == paasid for c in creds):
        raise KeysError(f"{path}: paasid {paasid} already exists (revoke it first)")
    token = secrets.token_hex(TOKEN_NEW_BYTES)
    write_keys(path, [*creds, Credential(paasid, token, fixmedins_code, admdvs)])
    return token


def revoke_key(path: str, paasid: str) -> None:
    creds = _existing(path)
    kept = [c for c in creds if c.paasid != paasid]
    if len(kept) == len(creds):
        raise KeysError(f"{path}: no credential with paasid {paasid}")
    write_keys(path, kept)


def describe(c: Credential) -> str:
    """A line for `yidi keys list`: never the token, only a fingerprint of it."""
    return f"{c.paasid}\t{c.scope}\ttoken sha256:{hashlib.sha256(c.token.encode()).hexdigest()[:12]}"
