"""The clearing report of a period (docs/contract.md section 8): one self-contained HTML page.

Who owes whom (a matrix of provinces, with totals and net positions), the
netted flows, and the pre-payment of each insured province as of the close.
Deterministic: the page of a closed period depends only on its Closing and the
journal rows up to its last_seq, so closing twice writes the same bytes.
"""
from __future__ import annotations

import html

from engine.clearing.records import Closing, NetRow, PairRow
from engine.contract import money
from engine.contract.protocol import PROVINCE_NAMES_ZH

_CSS = """
body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:2em;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.l,th.l{text-align:left}
td.z{color:#bbb}td.neg{color:#a00}tr.tot td{font-weight:bold;background:#fafafa}
.warn{background:#fde2e1;font-weight:bold}.ok{color:#2a7}
.note{color:#555;font-size:.85em;max-width:60em}
.bar{display:inline-block;height:.7em;background:#4a7bd0;vertical-align:middle}
"""


def _yuan(fen: int) -> str:
    return money.format_fen(fen)


def prov_label(p: str) -> str:
    name = PROVINCE_NAMES_ZH.get(p)
    return f"{p} {name}" if name else p


def report_html(c: Closing, rows: list[PairRow], net: list[NetRow], facts: dict) -> str:
    """A self-contained HTML page of a closed period (deterministic: closing twice writes the same)."""
    provs = sorted({r.insured for r in rows} | {r.treatment for r in rows})
    owes = {p: sum(r.clear_fen for r in rows if r.insured == p) for p in provs}
    owed = {p: sum(r.clear_fen for r in rows if r.treatment == p) for p in provs}
    out = _report_head(c, rows, net, facts)
    out += _report_matrix(rows, provs, owes, owed)
    out += _report_netting(net)
    out += _report_prepay(c, owes, facts)
    out.append("</body></html>\n")
    return "\n".join(out)


def _report_head(c: Closing, rows: list[PairRow], net: list[NetRow], facts: dict) -> list[str]:
    """Title, what the period covers, and the totals before and after netting."""
    e = html.escape
    total = sum(r.clear_fen for r in rows)
    gross_abs = sum(abs(r.clear_fen) for r in rows)
    net_total = sum(n.net_fen for n in net)
    if c.preview:
        title = f"DRY RUN: cross-province clearing (清算), period {e(c.period)}, not closed"
        when = (f'<p class="warn">Not closed: a dry run. These are the figures a close at journal row '
                f"{c.last_seq} would clear; rows committed since may change them.</p>")
    else:
        title = f"Cross-province clearing (清算), period {e(c.period)}"
        when = f'<p class="warn">Closed with --force, overriding: {e(c.forced)}</p>' if c.forced else ""
    covers = (f"Covering the journal up to row {c.last_seq}. " if c.preview
              else f"Closed {e(c.closed_at)}, covering the journal up to row {c.last_seq}. ")
    return [
        "<!doctype html>", '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>yidi clearing {e(c.period)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{title}</h1>",
    ] + ([when] if when else []) + [
        '<p class="note">',
        covers +
        f"{facts['settlements']} cross-province settlements and {facts['reversals']} reversals count in "
        f"this period ({len(rows)} ordered pairs of provinces)"
        + (f", {facts['late_rows']} of them committed after their own month was closed" if facts["late_rows"] else "")
        + ". Amounts in yuan. clear_amt = fund_pay_sumamt + acct_pay, owed by the insured province "
        "to the treatment province (docs/contract.md section 8).</p>",
        "<table><tr><th class=l>what</th><th>yuan</th></tr>",
        f"<tr><td class=l>clear_amt, all pairs</td><td>{_yuan(total)}</td></tr>",
        f"<tr><td class=l>netted flows (轧差) to transfer</td><td>{_yuan(net_total)}</td></tr>",
        f"<tr><td class=l>saved by netting</td><td>{_yuan(gross_abs - net_total)}</td></tr></table>",
    ]


def _report_matrix(rows: list[PairRow], provs: list[str], owes: dict[str, int], owed: dict[str, int]) -> list[str]:
    """What each insured province owes each treatment province, with the totals and net positions."""
    e = html.escape
    out = ["<h2>What each insured province owes each treatment province (clear_amt)</h2>"]
    if not rows:
        return out + ["<p>No cross-province settlement or reversal counts in this period.</p>"]
    cell = {(r.insured, r.treatment): r for r in rows}
    total = sum(r.clear_fen for r in rows)
    out.append('<table><tr><th class=l>insured \\ treatment</th>'
               + "".join(f"<th>{e(prov_label(p))}</th>" for p in provs) + "<th>owes</th></tr>")
    for a in provs:
        tds = []
        for b in provs:
            r = cell.get((a, b))
            if r is None:
                tds.append('<td class="z">·</td>')
            else:
                cls = ' class="neg"' if r.clear_fen < 0 else ""
                tip = (f"{r.setl_cnt} settlements net, medfee_sumamt {_yuan(r.medfee_fen)}, "
                       f"fund_pay_sumamt {_yuan(r.fund_fen)}, acct_pay {_yuan(r.acct_fen)}")
                tds.append(f'<td{cls} title="{e(tip)}">{_yuan(r.clear_fen)}</td>')
        out.append(f"<tr><th class=l>{e(prov_label(a))}</th>{''.join(tds)}<td>{_yuan(owes[a])}</td></tr>")
    out.append('<tr class="tot"><td class=l>is owed</td>'
               + "".join(f"<td>{_yuan(owed[p])}</td>" for p in provs) + f"<td>{_yuan(total)}</td></tr>")
    out.append('<tr class="tot"><td class=l>net position</td>'
               + "".join(f'<td{" class=neg" if owed[p] - owes[p] < 0 else ""}>{_yuan(owed[p] - owes[p])}</td>'
                         for p in provs) + "<td></td></tr></table>")
    out.append('<p class="note">Net position = is owed - owes: positive, the province receives; '
               "negative, it pays. Netting keeps every position.</p>")
    return out


def _report_netting(net: list[NetRow]) -> list[str]:
    """The netted flows, one transfer per pair of provinces, with a bar each."""
    e = html.escape
    out = ["<h2>Netted flows (轧差): one transfer per pair of provinces</h2>"]
    if not net:
        return out + ["<p>Nothing to transfer.</p>"]
    top = max(n.net_fen for n in net)
    out.append("<table><tr><th class=l>payer</th><th class=l>payee</th><th>net_amt</th><th></th></tr>")
    for n in net:
        w = max(1, (n.net_fen * 200) // top)
        out.append(f"<tr><td class=l>{e(prov_label(n.payer))}</td><td class=l>{e(prov_label(n.payee))}</td>"
                   f'<td>{_yuan(n.net_fen)}</td><td class=l><span class="bar" style="width:{w}px"></span></td></tr>')
    net_total = sum(n.net_fen for n in net)
    out.append(f'<tr class="tot"><td class=l colspan=2>total</td><td>{_yuan(net_total)}</td><td></td></tr></table>')
    return out


def _report_prepay(c: Closing, owes: dict[str, int], facts: dict) -> list[str]:
    """Each insured province's deposit, what the period drew on it and what later periods had."""
    e = html.escape
    drawn = {p: v for p, v in owes.items() if v}
    after = {p: v for p, v in facts["open_after_fen"].items() if v}
    out = ["<h2>Pre-payment (预付金) of the insured provinces</h2>"]
    read = "as read for this dry run" if c.preview else "as read when the period was closed"
    out.append(f'<p class="note">Warning at {c.warn_bp / 100:g} % of the deposit (prepay.csv of {e(c.world_dir)}, '
               f"{read}). <i>Drawn in the period</i> is what this clearing "
               "settles; <i>drawn after it</i> is what later periods had already charged when it was "
               "closed: the usage since the last closed period.</p>")
    out.append("<table><tr><th class=l>insured province</th><th>deposit</th><th>drawn in the period</th>"
               "<th>%</th><th>drawn after it</th><th>%</th></tr>")
    n_warn = 0
    for p in sorted(set(drawn) | set(after) | set(c.prepay_fen)):
        d = c.prepay_fen.get(p, 0)
        tds = []
        for v in (drawn.get(p, 0), after.get(p, 0)):
            if d > 0:
                bp = (v * money.BP_ONE) // d
                warn = bp >= c.warn_bp
                pct = f"{bp / 100:.1f}"
            else:
                warn, pct = v > 0, ("no deposit" if v > 0 else "")
            n_warn += warn
            cls = ' class="warn"' if warn else ""
            tds.append(f"<td{cls}>{_yuan(v)}</td><td{cls}>{pct}</td>")
        out.append(f"<tr><td class=l>{e(prov_label(p))}</td><td>{_yuan(d)}</td>{''.join(tds)}</tr>")
    out.append("</table>")
    out.append(f'<p class="{"warn" if n_warn else "ok"}">'
               + (f"{n_warn} pre-payment warning(s)." if n_warn else "No pre-payment warning.") + "</p>")
    return out
