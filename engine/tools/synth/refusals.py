"""Which settlements the hub will refuse for a reason the hospital learns only then
(docs/contract.md sections 4-6), forecast from a WorldView.

A one-shot settlement that is refused ends its visit. In the step-wise flow the
hospital has registered the visit and uploaded its lines first; it reacts to a
refusal (the patient pays in cash and the registration is cancelled), and it
reverses or undoes only settlements that happened. The generator plans those
reactions from this forecast, which follows the rules that decide a refusal:

- `E_NO_POLICY`: no policy for the person's (insuplc_admdvs, insutype); a step-wise
  visit is then refused at registration already.
- `E_FILING_REQUIRED`: the visit's filing class (section 4) is UNFILED and the
  policy's `reduction.unfiled` is null.
- `E_NO_QUALIFICATION`: a chronic visit (med_type 14) whose person does not hold the
  disease, or whose policy does not list it.

`E_DATE` depends on the order of a person's settlements (a settlement dated in a
later year moves the person's year on), so a visit dated in the year before is
`UNCERTAIN`: the generator plans nothing that depends on its outcome.
"""
from __future__ import annotations

import numpy as np

from engine.contract.protocol import region_covers
from engine.tools.synth.draws import EPOCH_DAY_SECONDS
from engine.tools.synth.view import WorldView
from engine.tools.synth.visits import Visits

UNCERTAIN = "?"  # the outcome depends on the order of the person's settlements (E_DATE)
MED_TYPE_CHRONIC = 14
MED_TYPES_EMERGENCY = (13, 24)


def forecast(v: WorldView, vis: Visits) -> list[str | None]:
    """Per visit: the error code its settlement will get, None for success, or UNCERTAIN."""
    f = vis.facts
    assert f is not None
    nv = len(vis.t)
    # The filings of each person, as rows of the view's filing columns.
    order = np.argsort(v.fil_psn, kind="stable")
    fil_psn_sorted = v.fil_psn[order]
    fil_dest = v.fil_dest.to_pylist()
    fil_begn, fil_last = v.fil_begn.tolist(), v.fil_last.tolist()
    held = set(zip(v.chr_psn.tolist(), v.chr_dise.to_pylist()))
    day = np.where(vis.ip, f.end_t, f.begn_t) // EPOCH_DAY_SECONDS
    lo = np.searchsorted(fil_psn_sorted, vis.psn, side="left").tolist()
    hi = np.searchsorted(fil_psn_sorted, vis.psn, side="right").tolist()
    order_l = order.tolist()
    out: list[str | None] = []
    for i, (d, psn, mt, trt, late, dd) in enumerate(zip(
            vis.data, vis.psn.tolist(), f.mt.tolist(), f.trt.tolist(), f.late.tolist(), day.tolist())):
        pol = v.policies.get((vis.insuplc[i], d["insutype"]))
        if pol is None:
            out.append("E_NO_POLICY")
            continue
        if late:
            out.append(UNCERTAIN)
            continue
        t = v.regions[trt]
        if t != vis.insuplc[i] and not (
                mt in MED_TYPES_EMERGENCY
                or (not vis.ip[i] and not pol.op_requires_filing)
                or any(fil_begn[r] <= dd <= fil_last[r] and region_covers(fil_dest[r], t)
                       for r in (order_l[k] for k in range(lo[i], hi[i])))):
            if pol.unfiled_refused:
                out.append("E_FILING_REQUIRED")
                continue
        if mt == MED_TYPE_CHRONIC and ((psn, d.get("dise_codg")) not in held or d.get("dise_codg") not in pol.chronic):
            out.append("E_NO_QUALIFICATION")
            continue
        out.append(None)
    assert len(out) == nv
    return out
