"""Two builds side by side: the same benchmark suites run alternately on each, figures in one table.

    git worktree add /tmp/yidi-before REV && (cd /tmp/yidi-before && PYTHONPATH=$PWD python setup.py build_ext --inplace)
    python bench/ab.py --before /tmp/yidi-before --suites store,replay,load --rounds 2

This machine's speed drifts from minute to minute, so a figure of one build is
only compared with the other's taken right beside it: each round runs every
suite on the "before" checkout, then on this one ("after"), then the next round
starts with "after" (ABBA), and the table gives each pair and their ratio.
Each checkout runs its own code (PYTHONPATH is its root) with its own bench
files; the suites are those of bench/run_all.py at full size unless --scale.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import run_all  # noqa: E402  (the suites' commands and the rows they are read into)

SUITES = ("store", "replay", "load")


def run(checkout: str, suite: str, scale: float, out: str) -> dict | None:
    env = {**os.environ, "PYTHONPATH": checkout, "YIDI_BENCH_SCALE": f"{scale:g}"}
    if suite in run_all.PYTEST_FILES:
        cmd = [sys.executable, "-m", "pytest", "-q", *run_all.PYTEST_FILES[suite], "--benchmark-enable", "-o",
               "addopts=", f"--benchmark-json={out}"]
    elif suite == "load":
        cmd = [sys.executable, os.path.join("bench", "serve_load.py"), "--campaign", "all", "--json", out]
    else:
        raise SystemExit(f"ab: suite {suite} is not one of {', '.join(SUITES)}")
    run_all.log(f"{os.path.basename(checkout)}: {suite}: {' '.join(cmd)}")
    subprocess.run(cmd, cwd=checkout, env=env, timeout=run_all.SUITE_TIMEOUT_S,
                   stdout=subprocess.DEVNULL if suite != "load" else None)
    if not os.path.exists(out):
        run_all.log(f"{suite} on {checkout}: no result")
        return None
    with open(out) as f:
        return {"suite": suite, "scale": scale, "data": json.load(f)}


def figures(saved: dict) -> dict[str, float]:
    """The headline numbers of one run, higher is better unless the name ends in _ms or _s."""
    suite, out = saved["suite"], {}
    if suite == "store":
        for (peer, size), rate in run_all.store_row(saved)[2].items():
            out[f"{peer} batch {size:,} settlements/s"] = rate
    elif suite == "replay":
        c = run_all.replay_row(saved)[2]
        if c.get("compiled"):
            out["replay compiled s"] = c["compiled"]
    elif suite == "load":
        for r in saved["data"]:
            out[f"{r['campaign']} durable settlements/s"] = r["settlements_per_s"]
            out[f"{r['campaign']} p99 ms"] = r["latency_ms"]["p99"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="a checkout of the other build, compiled in place")
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--json", help="write every figure here too")
    args = ap.parse_args(argv)
    before = os.path.abspath(args.before)
    if not os.path.isdir(os.path.join(before, "engine")):
        raise SystemExit(f"ab: {before} is not a yidi checkout (no engine/ folder)")
    sides = {"before": before, "after": ROOT}
    results: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory(prefix="yidi-ab-") as tmp:
        for rnd in range(args.rounds):
            order = ("before", "after") if rnd % 2 == 0 else ("after", "before")
            for suite in args.suites.split(","):
                for side in order:
                    saved = run(sides[side], suite, args.scale, os.path.join(tmp, f"{side}-{suite}-{rnd}.json"))
                    for name, v in (figures(saved) if saved else {}).items():
                        results[side].setdefault(name, []).append(v)
    print(f"| figure | before ({before}) | after ({ROOT}) | after / before |")
    print("|---|---|---|---|")
    for name in results["after"]:
        b, a = results["before"].get(name, []), results["after"][name]
        ratio = " ".join(f"{y / x:.2f}" for x, y in zip(b, a) if x)
        print(f"| {name} | {', '.join(f'{x:,.1f}' for x in b)} | {', '.join(f'{y:,.1f}' for y in a)} | {ratio} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
