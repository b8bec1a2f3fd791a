"""Run the benchmark suites, save their JSON, and regenerate the README's performance table and charts.

    python bench/run_all.py                      # every suite at full size (about 20 minutes), then the table
    python bench/run_all.py --only store,load    # some suites; the others keep their saved JSON
    python bench/run_all.py --from-saved         # the table and charts from bench/results/*.json only

Suites, each saved as bench/results/<suite>.json:
- kernel: bench/test_bench_kernel.py and _duckdb.py (compiled match + split vs the reference, Polars, DuckDB),
          pytest-benchmark JSON;
- replay: bench/test_bench_replay.py (`yidi replay` compiled vs --reference, world load included);
- store:  bench/test_bench_store.py (commits of 1, 64 and 1,024 settlements vs raw SQLite inserts; the fold);
- load:   bench/serve_load.py --campaign all (Locust against `yidi serve`: saturation, and p99 at 1,000 req/s);
- demo:   `yidi demo` at its defaults (the summary.json of the report folder).

The pytest suites run with YIDI_BENCH_SCALE=1 (the figures the README quotes);
`--scale` changes it for a quick look (the table then says so). Everything in
the table is read from the JSON files, so the table can be regenerated without
running anything, and a figure in the README always has its file and command.
The table goes between the `<!-- perf-table:begin -->` and `<!-- perf-table:end -->`
markers of README.md; the charts go to bench/results/*.png.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
README = os.path.join(ROOT, "README.md")
BEGIN, END = "<!-- perf-table:begin -->", "<!-- perf-table:end -->"
SUITES = ("kernel", "replay", "store", "load", "demo")
PYTEST_FILES = {"kernel": ["bench/test_bench_kernel.py", "bench/test_bench_kernel_duckdb.py"],
                "replay": ["bench/test_bench_replay.py"], "store": ["bench/test_bench_store.py"]}
SUITE_TIMEOUT_S = 3600  # one suite; a hung suite must not hang the runner
COMMANDS = {
    "kernel": 'YIDI_BENCH_SCALE=1 pytest bench/test_bench_kernel.py bench/test_bench_kernel_duckdb.py '
              '--benchmark-enable -o addopts=""',
    "replay": 'YIDI_BENCH_SCALE=1 pytest bench/test_bench_replay.py --benchmark-enable -o addopts=""',
    "store": 'YIDI_BENCH_SCALE=1 pytest bench/test_bench_store.py --benchmark-enable -o addopts=""',
    "load": "python bench/serve_load.py --campaign all",
    "demo": "yidi demo",
}


def log(msg: str) -> None:
    print(f"[run_all] {msg}", file=sys.stderr, flush=True)


def path(suite: str) -> str:
    return os.path.join(RESULTS, f"{suite}.json")


# ---------------------------------------------------------------- running the suites

def run_suite(suite: str, scale: float) -> bool:
    """Run one suite and save its JSON; False (and the old JSON kept) when it fails."""
    os.makedirs(RESULTS, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": ROOT, "YIDI_BENCH_SCALE": f"{scale:g}"}
    tmp = path(suite) + ".tmp"
    if suite in PYTEST_FILES:
        cmd = [sys.executable, "-m", "pytest", "-q", *PYTEST_FILES[suite], "--benchmark-enable", "-o", "addopts=",
               f"--benchmark-json={tmp}"]
    elif suite == "load":
        cmd = [sys.executable, os.path.join("bench", "serve_load.py"), "--campaign", "all", "--json", tmp]
    elif suite == "demo":
        report = os.path.join(RESULTS, "demo-report")
        shutil.rmtree(report, ignore_errors=True)
        cmd = [sys.executable, "-m", "engine.cli", "demo", "--report", report, "--no-progress"]
    else:
        raise ValueError(suite)
    log(f"{suite}: {' '.join(cmd)}")
    t0 = datetime.datetime.now()
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=env, timeout=SUITE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log(f"{suite}: timed out after {SUITE_TIMEOUT_S} s; keeping the saved JSON")
        return False
    if suite == "demo" and p.returncode == 0:
        shutil.copyfile(os.path.join(RESULTS, "demo-report", "summary.json"), tmp)
    # serve_load exits 1 when a budget is missed: its JSON is still the measurement, and the table shows the verdict.
    if not os.path.exists(tmp) or (p.returncode != 0 and suite != "load"):
        log(f"{suite}: failed (exit code {p.returncode}); keeping the saved JSON")
        return False
    with open(tmp) as f:
        data = json.load(f)
    wrapped = {"suite": suite, "scale": scale, "command": COMMANDS[suite], "exit_code": p.returncode,
               "started": t0.isoformat(timespec="seconds"), "seconds": (datetime.datetime.now() - t0).seconds,
               "machine": machine(), "data": data}
    with open(path(suite), "w") as f:
        json.dump(wrapped, f, indent=1)
    os.remove(tmp)
    return True


def machine() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "commit": commit}


# ---------------------------------------------------------------- reading the JSON

def load(suite: str) -> dict | None:
    try:
        with open(path(suite)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def _benchmarks(saved: dict) -> dict[str, dict]:
    """pytest-benchmark entries by test name (parametrised ones by their full name)."""
    return {b["name"]: b for b in saved["data"]["benchmarks"]}


def _scale_note(saved: dict) -> str:
    return "" if saved.get("scale", 1.0) == 1.0 else f" (at YIDI_BENCH_SCALE={saved['scale']:g}, not the full size)"


def kernel_row(saved: dict) -> tuple[str, str, dict]:
    b = _benchmarks(saved)

    def rate(name: str) -> float | None:
        e = b.get(name)
        return e["extra_info"]["lines"] / e["stats"]["median"] if e else None

    c, r, p, k = rate("test_compiled"), rate("test_reference"), rate("test_polars"), rate("test_duckdb")
    lines = b["test_compiled"]["extra_info"]["lines"] if "test_compiled" in b else 0
    parts = [f"compiled {c / 1e6:.1f} M lines/s" if c else "compiled: not measured"]
    if p and c:
        parts.append(f"Polars (join + same arithmetic, 2 threads) {p / 1e6:.1f} M lines/s ({c / p:.1f}x slower)")
    if k and c:
        parts.append(f"DuckDB (the same in SQL, 2 threads) {k / 1e6:.1f} M lines/s ({c / k:.1f}x slower)")
    if r and c:
        parts.append(f"reference {r / 1e6:.2f} M lines/s ({c / r:.0f}x slower)")
    n_cat = max(1_000, int(200_000 * saved.get("scale", 1.0)))  # as bench/test_bench_kernel.py sizes it
    what = f"kernel: match + split, {lines:,} lines vs a {n_cat:,}-entry catalogue, Zipf(1.1), one core"
    return what + _scale_note(saved), "; ".join(parts), {"compiled": c, "Polars": p, "DuckDB": k, "reference": r}


def replay_row(saved: dict) -> tuple[str, str, dict]:
    b = _benchmarks(saved)
    c = b.get("test_replay_compiled")
    r = b.get("test_replay_reference")
    n = (c or r)["extra_info"]["requests"]
    parts = []
    if c:
        parts.append(f"compiled {c['stats']['median']:.1f} s ({n / c['stats']['median']:,.0f} requests/s)")
    if r:
        parts.append(f"reference {r['stats']['median']:.1f} s")
    if c and r:
        parts.append(f"{r['stats']['median'] / c['stats']['median']:.1f}x")
    pairs = b.get("test_replay_interleaved")
    if pairs:
        parts.append("back to back (compiled, then reference, twice): "
                     + " and ".join(f"{x:.1f}x" for x in pairs["extra_info"]["ratios"]))
    what = f"replay: {n:,} mixed requests, world load and process start included"
    return what + _scale_note(saved), ", ".join(parts), {"compiled": c and c["stats"]["median"],
                                                         "reference": r and r["stats"]["median"]}


def store_row(saved: dict) -> tuple[str, str, dict]:
    rates: dict[tuple[str, int], float] = {}
    fold = {}
    for b in saved["data"]["benchmarks"]:
        if b["name"].startswith("test_commit_throughput"):
            rates[(b["params"]["peer"], int(b["params"]["size"]))] = b["extra_info"]["settlements_per_s"]
        elif b["name"] == "test_fold_cost":
            fold = b["extra_info"]
    parts = []
    for size in sorted({s for _, s in rates}):
        st, raw = rates.get(("store", size)), rates.get(("raw_sqlite", size))
        txt = f"batch {size:,}: store {st:,.0f}/s" if st else f"batch {size:,}: store -"
        if raw:
            txt += f", raw SQLite inserts {raw:,.0f}/s"
        parts.append(txt)
    if fold:
        parts.append(f"fold {fold.get('fold_us_per_settlement')} us per settlement "
                     f"({fold.get('settlements_per_s_with_fold', 0):,.0f}/s at batch 1,024 with it)")
    what = "store: durable commits (WAL, synchronous=FULL), settlements/s by batch size"
    return what + _scale_note(saved), "; ".join(parts), rates


def load_row(saved: dict) -> list[tuple[str, str, dict]]:
    rows = []
    for r in saved["data"]:
        lat = r.get("latency_ms", {})
        offered = f"{r['rate']:,} req/s offered" if r.get("rate") else "closed loop"
        over = (f"{r['users']} Locust users x {r['in_flight']} in flight over {r['connections']} connections "
                f"(one per province platform), {'signed' if r.get('auth', True) else '--no-auth'}"
                if "connections" in r else f"{r['users']} connections x {r['in_flight']} in flight")
        what = f"load ({r['campaign']}): `yidi serve` + Locust on the other core, {over}, {offered}, {r['duration_s']} s"
        budget = []
        if r.get("settlements_min"):
            budget.append(f"floor {r['settlements_min']:,}/s")
        if r.get("p99_budget_ms"):
            budget.append(f"p99 budget {r['p99_budget_ms']} ms")
        verdict = "met" if r.get("verdict") == "ok" else "MISSED"
        fig = (f"{r['settlements_per_s']:,.0f} durable settlements/s, {r['replies_per_s']:,.0f} replies/s; "
               f"p50 {_ms(lat.get('p50'))}, p99 {_ms(lat.get('p99'))}; mean batch {r.get('batch_size_mean')}"
               + (f"; {', '.join(budget)}: {verdict}" if budget else ""))
        rows.append((what, fig, r))
    return rows


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def demo_row(saved: dict) -> tuple[str, str, dict]:
    s = saved["data"]
    lat, t = s["latency"], s["timings_s"]
    w = s["world"]
    what = (f"`yidi demo`: {s['requests']:,} requests ({s['counts']['settlements']:,} settlements) on "
            f"{w['persons']:,} persons x {w['catalogue_rows']:,} catalogue rows, in-process hub on the store, "
            f"{s['in_flight']} in flight over {s['connections']} signed-in connections")
    fig = (f"{s['settlements_per_s']:,.0f} settlements/s; p50 {lat['latency_ms_p50']:.0f} ms, p99 "
           f"{lat['latency_ms_p99']:.0f} ms (closed loop); whole command {t['total_s']:.0f} s "
           f"(world {'cached' if s['world_cached'] else 'generated'} {t['world_s']:.0f} s, store open "
           f"{t['store_open_s']:.0f} s, replay {t['replay_s']:.0f} s)")
    return what, fig, s


# ---------------------------------------------------------------- the table and the charts

def table() -> tuple[str, dict]:
    rows: list[tuple[str, str, str]] = []
    series: dict = {}
    for suite, fn in (("kernel", kernel_row), ("replay", replay_row), ("store", store_row), ("load", load_row),
                      ("demo", demo_row)):
        saved = load(suite)
        if saved is None:
            rows.append((f"{suite}: not measured yet", "-", COMMANDS[suite]))
            continue
        out = fn(saved)
        for what, fig, data in (out if isinstance(out, list) else [out]):
            rows.append((what, fig, saved.get("command", COMMANDS[suite])))
        series[suite] = out
    m = next((load(s)["machine"] for s in SUITES if load(s)), machine())
    dates = sorted(load(s)["started"][:10] for s in SUITES if load(s))
    lines = [
        f"Measured on {m['cores']} cores ({m['cpu'] or 'unknown CPU'}), Python {m['python']}, "
        f"commit {m['commit'] or '?'}, {dates[0] if dates else '?'}"
        + (f" to {dates[-1]}" if dates and dates[-1] != dates[0] else "") + ". "
        "Regenerated by `python bench/run_all.py` from `bench/results/*.json`.",
        "",
        "| what | figure | command |",
        "|---|---|---|",
    ]
    for what, fig, cmd in rows:
        lines.append(f"| {what} | {fig} | `{cmd}` |")
    return "\n".join(lines) + "\n", series


def charts(series: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "kernel" in series:
        peers = {k: v for k, v in series["kernel"][2].items() if v}
        fig, ax = plt.subplots(figsize=(6, 2.6))
        names = list(peers)[::-1]
        ax.barh(names, [peers[n] / 1e6 for n in names], color=["#4c72b0" if n == "compiled" else "#999999"
                                                                for n in names])
        ax.set_xscale("log")
        ax.set_xlabel("million fee lines / s (log scale)")
        ax.set_title("Kernel: match + split, one core")
        fig.tight_layout()
        written.append(_save(fig, "kernel.png"))
    if "store" in series and series["store"][2]:
        rates = series["store"][2]
        sizes = sorted({s for _, s in rates})
        fig, ax = plt.subplots(figsize=(6, 3))
        x = range(len(sizes))
        for off, peer, colour in ((-0.2, "store", "#4c72b0"), (0.2, "raw_sqlite", "#999999")):
            ax.bar([i + off for i in x], [rates.get((peer, s), 0) for s in sizes], width=0.4, color=colour,
                   label={"store": "yidi store (ledger, logs, LZ4)", "raw_sqlite": "raw SQLite inserts, same rows"}[
                       peer])
        ax.set_xticks(list(x), [f"batch {s:,}" for s in sizes])
        ax.set_ylabel("durable settlements / s")
        ax.set_title("Store commits, full durability")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, "store.png"))
    if "load" in series:
        camps = [d for _, _, d in series["load"]]
        fig, ax = plt.subplots(figsize=(6, 3))
        labels = [c["campaign"] for c in camps]
        for key, colour in (("p50", "#4c72b0"), ("p99", "#dd8452")):
            ax.scatter(labels, [c["latency_ms"].get(key) or 0 for c in camps], color=colour, label=key, s=40)
        ax.set_yscale("log")
        ax.set_ylabel("latency, ms (log scale)")
        ax.set_title("Load campaigns: client-side latency")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, "load.png"))
    plt.close("all")
    return written


def _save(fig, name: str) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    p = os.path.join(RESULTS, name)
    fig.savefig(p, dpi=100)
    return p


def write_readme(text: str) -> bool:
    with open(README, encoding="utf-8") as f:
        readme = f.read()
    if BEGIN not in readme or END not in readme:
        log(f"README.md has no {BEGIN} ... {END} markers: printing the table instead")
        print(text)
        return False
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{text}{END}{tail}"
    if new != readme:
        with open(README, "w", encoding="utf-8") as f:
            f.write(new)
    return True


def main(argv: list[str] | None = None) -> int:
    global RESULTS, README
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help=f"comma-separated suites to run, of {','.join(SUITES)}")
    p.add_argument("--from-saved", action="store_true", help="run nothing: the table and charts from saved JSON")
    p.add_argument("--scale", type=float, default=1.0, help="YIDI_BENCH_SCALE for the pytest suites (default 1)")
    p.add_argument("--results", default=RESULTS, help="folder of the saved JSON and charts (default bench/results)")
    p.add_argument("--readme", default=README, help="the file whose table is regenerated (default README.md)")
    a = p.parse_args(argv)
    RESULTS, README = os.path.abspath(a.results), os.path.abspath(a.readme)
    failed = []
    if not a.from_saved:
        suites = a.only.split(",") if a.only else list(SUITES)
        unknown = set(suites) - set(SUITES)
        if unknown:
            p.error(f"unknown suites: {', '.join(sorted(unknown))}")
        for s in suites:
            if not run_suite(s, a.scale):
                failed.append(s)
    text, series = table()
    for c in charts(series):
        log(f"wrote {os.path.relpath(c, ROOT)}")
    if write_readme(text):
        log("README.md performance table regenerated")
    if failed:
        log(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
