"""A credential of the keys file (docs/contract.md section 10), as the engine and the transports see it.

A hospital system's credential (fixmedins_code set) acts for that institution
only; a platform's (admdvs set) for every institution whose region it covers,
with the "covers" rule of section 4. The transports (engine.hub.auth) decide which
credential signed a request; the engine checks what it may do (scope, sign-in).
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.contract.protocol import region_covers


@dataclass(frozen=True, slots=True)
class Credential:
    paasid: str
    token: str
    fixmedins_code: str  # "" for a platform's credential
    admdvs: str  # "" for a hospital system's credential

    def allows(self, fixmedins_code: object, inst_admdvs: str | None) -> bool:
        """Whether this credential may act for the institution (its region `inst_admdvs`, None: unknown)."""
        if self.fixmedins_code:
            return fixmedins_code == self.fixmedins_code
        return inst_admdvs is not None and region_covers(self.admdvs, inst_admdvs)

    @property
    def scope(self) -> str:
        return f"institution {self.fixmedins_code}" if self.fixmedins_code else f"region {self.admdvs}"

    def __repr__(self) -> str:  # never the token (logs, tracebacks)
        return f"Credential({self.paasid!r}, {self.scope})"


class _Operator:
    """The hub's operator, acting on the admin listener (an operator's long-term filing): not a
    credential of the keys file, never what a gateway hands the engine."""

    __slots__ = ()
    paasid = "operator"  # who made the journal's row (section 10's journal columns)
    fixmedins_code = ""

    def __repr__(self) -> str:
        return "OPERATOR"


OPERATOR = _Operator()
