"""Sign-in (9001), sign-out (9002) and the engine's checks of section 10 (docs/contract.md).

The transports decide which credential signed a request (engine.hub.auth); the
engine then checks, in this order and before anything of section 7, that the
envelope's `fixmedins_code` is within the credential's scope (E_FORBIDDEN) and
that its `sign_no` names a sign-in in force for that credential and institution
(E_SIGN_IN). A request without a credential (replay, `yidi serve --no-auth`)
is checked for neither.

A sign-in is in force from its `sign_time` until a 9002 names it or 24 hours
pass, on the hub's clock (the request's `inf_time` under the replay clock).
Sign-ins are durable: a store takes each one made or ended (`take_events`) and
writes it in the same commit as the batch that made it, so a reply naming a
sign_no leaves only once the sign-in would survive a restart; at open the
store gives back those still in force (`restore`).
"""
from __future__ import annotations

import datetime as _dt
import secrets
from dataclasses import dataclass

from engine.contract.protocol import (
    E_FORBIDDEN, E_LIMIT, E_SCHEMA, E_SIGN_IN, E_UNKNOWN_INSTITUTION, INFNO_SIGN_IN, INFNO_SIGN_OUT, Refused,
)
from engine.contract.wire import Codec, DecodeError

SIGN_NO_CHARS = 30  # hex digits from the operating system's random source: 120 bits
SIGN_IN_HOURS = 24
SIGN_INS_PER_CREDENTIAL_MAX = 4096  # in force at once for one credential (a platform signs in per institution)
OPERATOR_CHARS_MAX = 128  # of opter_no, opter, opter_name and ip as kept with a sign-in or a journal row
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(slots=True)
class SignIn:
    sign_no: str
    paasid: str  # "" when made without a credential
    fixmedins_code: str
    opter_no: str
    ip: str
    sign_time: str  # hub clock, YYYY-MM-DD HH:MM:SS
    ends: str  # sign_time + 24 h: in force while sign_time <= t < ends
    signed_out: str  # the 9002's time; "" while not signed out


def ends_of(sign_time: str) -> str:
    """The end of a sign-in made at `sign_time`."""
    t = _dt.datetime.strptime(sign_time, _TIME_FORMAT) + _dt.timedelta(hours=SIGN_IN_HOURS)
    return t.strftime(_TIME_FORMAT)


def _text(v: object) -> str:
    return v[:OPERATOR_CHARS_MAX] if isinstance(v, str) else ""


def journal_auth(cred, env) -> tuple[str, str, str, str]:
    """What the journal keeps of who made a change: paasid ("" without a credential), sign_no, opter,
    opter_name (section 10)."""
    return cred.paasid if cred is not None else "", _text(env.sign_no), _text(env.opter), _text(env.opter_name)


class SignIns:
    """The sign-ins in force, by sign_no, and the events a store has not yet taken."""

    def __init__(self):
        self.by_no: dict[str, SignIn] = {}
        self.count_by_paasid: dict[str, int] = {}  # sign-ins held in by_no, per credential
        # Sign-ins made or ended since the store last took them; None: no store takes them (an
        # engine in memory only), so nothing is kept.
        self.events: list[SignIn] | None = None

    def restore(self, signs: list[SignIn]) -> None:
        """At open: the sign-ins the store holds that are not signed out."""
        for s in signs:
            self._hold(s)

    def merge(self, signs: list[SignIn]) -> None:
        """Sign-ins another engine committed on the same store (a node of several, section 13): made ones
        are held, signed-out ones dropped; not recorded as this engine's events."""
        for s in signs:
            held = self.by_no.get(s.sign_no)
            if held is not None:
                self._drop(held)
            if not s.signed_out:
                self._hold(s)

    def take_events(self) -> list[SignIn]:
        out = self.events or []
        if self.events is not None:
            self.events = []
        return out

    def _hold(self, s: SignIn) -> None:
        self.by_no[s.sign_no] = s
        self.count_by_paasid[s.paasid] = self.count_by_paasid.get(s.paasid, 0) + 1

    def _drop(self, s: SignIn) -> None:
        del self.by_no[s.sign_no]
        self.count_by_paasid[s.paasid] -= 1

    def _record(self, s: SignIn) -> None:
        if self.events is not None:
            self.events.append(s)

    # ------------------------------------------------------------ the checks (section 10's order)

    def gate(self, cred, env, infno: str, now: str, inst: dict) -> None:
        """E_FORBIDDEN (scope), then E_SIGN_IN; `inst`: fixmedins_code -> (admdvs, level)."""
        code = env.fixmedins_code
        own = cred.fixmedins_code
        if own:  # a hospital system's credential: its institution only (the common case, inline)
            allowed = code == own
        else:
            row = inst.get(code) if isinstance(code, str) else None
            allowed = cred.allows(code, row[0] if row is not None else None)
        if not allowed:
            raise Refused(E_FORBIDDEN, f"fixmedins_code {_text(code)!r} is outside this credential's scope"
                                       f" ({cred.scope})")
        if infno != INFNO_SIGN_IN and infno != INFNO_SIGN_OUT:  # 9002: the sign_no it names (sign_out)
            self.check(cred.paasid, code, env.sign_no, now)

    def check(self, paasid: str, code: str, sign_no: object, now: str) -> SignIn:
        """The sign-in `sign_no` names, in force now for this credential and institution, or E_SIGN_IN."""
        # A sign-in signed out is no longer held (sign_out): it names none.
        s = self.by_no.get(sign_no) if isinstance(sign_no, str) else None
        if s is None or s.paasid != paasid or s.fixmedins_code != code:
            raise Refused(E_SIGN_IN, "sign_no names no sign-in of this credential and institution: sign in (9001)")
        if not s.sign_time <= now < s.ends:
            raise Refused(E_SIGN_IN, f"sign_no is in force from {s.sign_time} to {s.ends}: sign in again (9001)")
        return s

    # ------------------------------------------------------------ 9001, 9002

    def sign_in(self, cred, env, codec: Codec, now: str, inst: dict) -> dict:
        try:
            d = codec.sign_in.decode(env.input).signIn
        except DecodeError as e:
            raise Refused(E_SCHEMA, f"input: {e}") from None
        code = env.fixmedins_code
        if not isinstance(code, str) or not code:
            raise Refused(E_SCHEMA, "fixmedins_code must be a non-empty string")
        for k in ("opter_no", "ip"):
            v = getattr(d, k)
            if not isinstance(v, str) or not v:
                raise Refused(E_SCHEMA, f"signIn.{k} must be a non-empty string")
        if code not in inst:
            raise Refused(E_UNKNOWN_INSTITUTION, f"fixmedins_code {_text(code)!r}")
        paasid = cred.paasid if cred is not None else ""
        if self.count_by_paasid.get(paasid, 0) >= SIGN_INS_PER_CREDENTIAL_MAX:
            self._forget_ended(paasid, now)
            if self.count_by_paasid.get(paasid, 0) >= SIGN_INS_PER_CREDENTIAL_MAX:
                raise Refused(E_LIMIT, f"{SIGN_INS_PER_CREDENTIAL_MAX} sign-ins in force for this credential:"
                                       " sign some out (9002) first")
        sign_no = secrets.token_hex(SIGN_NO_CHARS // 2)
        s = SignIn(sign_no, paasid, code, _text(d.opter_no), _text(d.ip), now, ends_of(now), "")
        self._hold(s)
        self._record(s)
        return {"signinoutb": {"sign_time": now, "sign_no": sign_no}}

    def sign_out(self, cred, env, codec: Codec, now: str) -> dict:
        try:
            d = codec.sign_out.decode(env.input).signOut
        except DecodeError as e:
            raise Refused(E_SCHEMA, f"input: {e}") from None
        for k in ("sign_no", "opter_no"):
            v = getattr(d, k)
            if not isinstance(v, str) or not v:
                raise Refused(E_SCHEMA, f"signOut.{k} must be a non-empty string")
        s = self.check(cred.paasid if cred is not None else "", env.fixmedins_code, d.sign_no, now)
        s.signed_out = now
        self._drop(s)
        self._record(s)
        return {"signoutoutb": {"sign_time": now}}

    def _forget_ended(self, paasid: str, now: str) -> None:
        """Drop this credential's sign-ins no longer in force (their rows stay in the store)."""
        for s in [s for s in self.by_no.values() if s.paasid == paasid and s.ends <= now]:
            self._drop(s)


from engine._compiled import check_fresh  # noqa: E402

check_fresh(__file__)
