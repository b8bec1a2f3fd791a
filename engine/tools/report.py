"""The report folder of `yidi demo`: an HTML page and PNG charts.

`write_report(folder, summary, series)` writes `index.html` and five charts:
`latency.png` (latency histogram), `throughput.png` (replies and settlements per
second during the replay), `funds_by_province.png` (fund totals by insured
province), `prepay.png` (pre-payment usage by insured province) and
`day_profile.png` (the simulated day's requests per hour). The page is static
and self-contained apart from the PNGs beside it: open it from the disk.

Money stays integer fen in the summary; it becomes a float only here, on a
chart's axis, where nothing is summed any more.
"""
from __future__ import annotations

import html
import os

import numpy as np

from engine.clearing.clearing import PREPAY_WARN_BP_DEFAULT
from engine.contract.protocol import FUND_NAMES, FUND_NAMES_EN, PROVINCE_NAMES_EN, province

FUND_ORDER = ("310100", "390100", "330100", "390200", "310200")
FUND_LABELS = {code: f"{code} {FUND_NAMES_EN[code]}" for code in FUND_ORDER}
FUND_COLOURS = {"310100": "#1f77b4", "390100": "#2ca02c", "330100": "#9ecae1", "390200": "#a1d99b",
                "310200": "#ff7f0e"}
CHARTS = (
    ("latency.png", "Latency: from a request's send to its reply, every request of the day"),
    ("throughput.png", "Throughput during the replay"),
    ("funds_by_province.png", "Fund payments by insured province, net of reversals"),
    ("prepay.png", "Pre-payment usage by insured province"),
    ("day_profile.png", "The simulated day: requests per hour of inf_time"),
)
DPI = 110
THROUGHPUT_BINS_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def yuan(fen: int) -> str:
    """Integer fen as yuan with thousands separators, without a float."""
    sign = "-" if fen < 0 else ""
    y, f = divmod(abs(fen), 100)
    return f"{sign}{y:,}.{f:02d}"


def province_name_en(prov: str) -> str:
    """The English name of the province of a region code ("" when it is none)."""
    return PROVINCE_NAMES_EN.get(province(prov), "")


def _prov_label(prov: str) -> str:
    return f"{province_name_en(prov) or prov[:2]} {prov}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, whatever the environment says
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


def chart_latency(path: str, latency_ms: np.ndarray, stats: dict) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    lo = max(float(latency_ms.min()), 0.01)
    hi = max(float(latency_ms.max()), lo * 1.01)
    bins = np.geomspace(lo, hi, 60)
    ax.hist(latency_ms, bins=bins, color="#4c72b0", alpha=0.85)
    ax.set_xscale("log")
    ax.set_yscale("log")
    for key, label, colour in (("latency_ms_p50", "p50", "#2ca02c"), ("latency_ms_p99", "p99", "#d62728"),
                               ("latency_ms_max", "max", "#7f7f7f")):
        ax.axvline(stats[key], color=colour, linestyle="--", linewidth=1.2, label=f"{label} {stats[key]:.1f} ms")
    ax.legend(loc="upper left")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("requests (log scale)")
    ax.set_title(f"Latency of {len(latency_ms):,} requests")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def chart_throughput(path: str, t_done_s: np.ndarray, is_settlement: np.ndarray, bin_s: float) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    end = float(t_done_s.max()) if len(t_done_s) else 1.0
    if bin_s <= 0:  # about 80 bins over the replay, in a round number of seconds
        bin_s = min((b for b in THROUGHPUT_BINS_S if end / b <= 80), default=THROUGHPUT_BINS_S[-1])
    edges = np.arange(0.0, end + bin_s, bin_s)
    if len(edges) < 2:
        edges = np.array([0.0, bin_s])
    all_n, _ = np.histogram(t_done_s, bins=edges)
    set_n, _ = np.histogram(t_done_s[is_settlement], bins=edges)
    mid = (edges[:-1] + edges[1:]) / 2
    ax.plot(mid, all_n / bin_s, label="replies / s (every infno)", color="#4c72b0", marker=".", markersize=3)
    ax.plot(mid, set_n / bin_s, label="settlement replies / s (2207, 2304)", color="#dd8452", marker=".",
            markersize=3)
    ax.set_xlabel("seconds since the replay started")
    ax.set_ylabel("per second")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Throughput, {bin_s:g} s bins")
    ax.legend(loc="lower center")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def chart_funds(path: str, by_prov: dict[str, dict[str, int]]) -> None:
    plt = _plt()
    provs = sorted(by_prov, key=lambda p: sum(by_prov[p].values()))
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.28 * len(provs) + 1.2)))
    left = np.zeros(len(provs))
    y = np.arange(len(provs))
    for code in FUND_ORDER:
        v = np.array([by_prov[p].get(code, 0) for p in provs], dtype=np.float64) / 100 / 1e6  # million yuan
        if not v.any():
            continue
        ax.barh(y, v, left=left, color=FUND_COLOURS[code], label=FUND_LABELS[code], height=0.75)
        left += v
    ax.set_yticks(y, [_prov_label(p) for p in provs])
    ax.set_xlabel("million yuan")
    ax.set_title("Fund payments by insured province (net of reversals)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def chart_prepay(path: str, prepay: dict[str, dict], warn_bp: int) -> None:
    plt = _plt()
    provs = sorted((p for p, v in prepay.items() if v["usage_bp"] is not None),
                   key=lambda p: prepay[p]["usage_bp"])
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.28 * len(provs) + 1.2)))
    y = np.arange(len(provs))
    pct = np.array([prepay[p]["usage_bp"] / 100 for p in provs], dtype=np.float64)
    colours = ["#d62728" if prepay[p]["warning"] else "#4c72b0" for p in provs]
    ax.barh(y, pct, color=colours, height=0.75)
    for yi, v in zip(y, pct):
        ax.text(v, yi, f" {v:.2f} %", va="center", fontsize=7)
    top = max(float(pct.max()) if len(pct) else 0.0, 1e-3)
    if top * 1.5 >= warn_bp / 100:
        ax.axvline(warn_bp / 100, color="#d62728", linestyle="--", linewidth=1.2, label=f"warning at "
                   f"{warn_bp / 100:g} %")
        ax.legend(loc="lower right")
    ax.set_xlim(0, top * 1.25)
    ax.set_yticks(y, [_prov_label(p) for p in provs])
    ax.set_xlabel("cross-province fund_pay_sumamt + acct_pay, % of the prepay.csv amount")
    ax.set_title(f"Pre-payment usage by insured province (warning at {warn_bp / 100:g} %)")
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def chart_day(path: str, hour_of_day: np.ndarray, is_settlement: np.ndarray) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    hours = np.arange(24)
    s = np.bincount(hour_of_day[is_settlement], minlength=24)
    o = np.bincount(hour_of_day[~is_settlement], minlength=24)
    ax.bar(hours, s, color="#dd8452", label="settlements (2207, 2304)")
    ax.bar(hours, o, bottom=s, color="#4c72b0", label="other requests")
    ax.set_xticks(hours, [f"{h:02d}" for h in hours])
    ax.set_xlabel("hour of the day (inf_time)")
    ax.set_ylabel("requests")
    ax.set_title("The day's profile: a morning and an afternoon peak")
    ax.legend(loc="upper right")
    ax.grid(axis="x", visible=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def write_report(folder: str, s: dict, series: dict) -> list[str]:
    """The charts and index.html; returns the files written."""
    os.makedirs(folder, exist_ok=True)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    chart_latency(p("latency.png"), series["latency_ms"], s["latency"])
    chart_throughput(p("throughput.png"), series["t_done_s"], series["is_settlement"], series["bin_s"])
    chart_funds(p("funds_by_province.png"), s["by_insured_province_fen"])
    chart_prepay(p("prepay.png"), s["prepay"], PREPAY_WARN_BP_DEFAULT)
    chart_day(p("day_profile.png"), series["hour_of_day"], series["is_settlement"])
    with open(p("index.html"), "w", encoding="utf-8") as f:
        f.write(render_html(s))
    return [name for name, _ in CHARTS] + ["index.html"]


# ---------------------------------------------------------------- the page

def _table(head: list[str], rows: list[list], num_from: int = 1) -> str:
    e = html.escape
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = []
    for r in rows:
        tds = "".join(f'<td class="{"n" if i >= num_from else ""}">{e(str(v))}</td>' for i, v in enumerate(r))
        body.append(f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(s: dict) -> str:
    e = html.escape
    c, lat, w = s["counts"], s["latency"], s["world"]
    facts = [
        ["day", f"{s['day']}, {s.get('flow', 'oneshot')} flow"],
        ["world", f"{w['provinces']} provinces, {w['regions']} pooling regions, {w['institutions']:,} institutions, "
                  f"{w['catalogue_rows']:,} catalogue rows, {w['persons']:,} persons, seed {w['seed']}"],
        ["requests", f"{s['requests']:,} (" + ", ".join(f"{k}: {v:,}" for k, v in s["requests_by_infno"].items())
         + ")"],
        ["committed", f"{c['settlements']:,} settlements, {c['reversals']:,} reversals, "
                      f"{c.get('undone', 0):,} settlements undone by 2601; "
                      f"{c['retries_answered']:,} retries answered from the journal; {c['refused']:,} refused"],
        ["sign-in", f"{s['connections']} connections of the province platforms, {s['sign_ins']:,} sign-ins "
                    f"(one per institution and day it works), in {s['sign_in_s']:.2f} s"],
        ["replay", f"{s['in_flight']} in flight over {s['connections']} connections, framed TCP, "
                   f"{lat['replay_s']:.1f} s, {s['batches']:,} batches"],
        ["throughput", f"{s['settlements_per_s']:,.0f} settlements/s, {s['requests_per_s']:,.0f} requests/s"],
        ["latency", f"p50 {lat['latency_ms_p50']:.2f} ms, p99 {lat['latency_ms_p99']:.2f} ms, "
                    f"max {lat['latency_ms_max']:.2f} ms"],
        ["timings", ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in s["timings_s"].items())],
    ]
    t = s["totals_fen"]
    totals = [[f, yuan(t[f])] for f in ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "preselfpay_amt",
                                         "inscp_scp_amt", "fund_pay_sumamt", "acct_pay", "psn_cash_pay")]
    funds = [[code, f"{FUND_NAMES.get(code, '')} ({FUND_NAMES_EN.get(code, '')})", yuan(v)]
             for code, v in s["by_fund_fen"].items()]
    classes = [[k, f"{v['count']:,}", yuan(v["medfee_sumamt"]), yuan(v["fund_pay_sumamt"]), yuan(v["acct_pay"]),
                yuan(v["psn_cash_pay"])] for k, v in s["by_class"].items()]
    errors = [[k, f"{v:,}"] for k, v in s["errors"].items()] or [["none", "0"]]
    prepay = [[f"{p} {province_name_en(p)}", yuan(v["used_fen"]), yuan(v["prepay_fen"]),
               "n/a" if v["usage_bp"] is None else f"{v['usage_bp'] / 100:.2f} %", "WARNING" if v["warning"] else ""]
              for p, v in sorted(s["prepay"].items())]
    charts = "".join(f'<figure><img src="{name}" alt="{e(title)}"><figcaption>{e(title)}</figcaption></figure>'
                     for name, title in CHARTS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>yidi demo: a national day, {e(s['day'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }}
th, td {{ padding: 0.2em 0.8em; border-bottom: 1px solid #eee; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ color: #666; font-size: 0.85em; }}
</style></head><body>
<h1>yidi demo: a national day of cross-region settlements, {e(s['day'])}</h1>
<p>Every figure below is summed from the replies the hospitals received (money in integer fen, shown in yuan;
settlements net of their reversals, each <code>setl_id</code> once). <code>summary.json</code> beside this
page holds the same numbers.</p>
{_table(["", ""], facts, num_from=9)}
<h2>Totals, net of reversals (yuan)</h2>
{_table(["field", "yuan"], totals)}
<h2>By fund (yuan)</h2>
{_table(["fund_pay_type", "fund", "yuan"], funds, num_from=2)}
<h2>By filing class</h2>
{_table(["filing_class", "settlements", "medfee_sumamt", "fund_pay_sumamt", "acct_pay", "psn_cash_pay"], classes)}
<h2>Errors by code</h2>
{_table(["err_code", "requests"], errors)}
<h2>Pre-payment usage by insured province</h2>
<p>Cross-province <code>fund_pay_sumamt + acct_pay</code> charged to each insured province over its
<code>prepay.csv</code> amount (docs/contract.md section 8; warning at {PREPAY_WARN_BP_DEFAULT / 100:g} %).</p>
{_table(["insured province", "used (yuan)", "prepay (yuan)", "usage", ""], prepay)}
<h2>Charts</h2>
{charts}
</body></html>
"""
