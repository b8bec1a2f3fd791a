"""The `yidi` command line."""
from __future__ import annotations

import argparse
import sys


def _cmd_replay(a: argparse.Namespace) -> int:
    from .replay import replay
    from .world import WorldError

    try:
        stats = replay(a.world, a.inp, a.out, reference=a.reference)
    except WorldError as e:
        print(f"yidi: world refused: {e}", file=sys.stderr)
        return 2
    print(
        f"replayed {stats['requests']} requests: world {stats['load_s']:.2f} s, "
        f"replay {stats['replay_s']:.2f} s",
        file=sys.stderr,
    )
    return 0


def _cmd_check_world(a: argparse.Namespace) -> int:
    from .world import WorldError, load_world

    try:
        w = load_world(a.world)
    except WorldError as e:
        print(f"yidi: world refused: {e}", file=sys.stderr)
        return 2
    print(
        f"world ok: {len(w.inst_code)} institutions, {len(w.cat_code)} catalogue rows, "
        f"{w.n_persons} persons, {len(w.policies)} policies, {len(w.fil_type)} filings, "
        f"{len(w.chr_dise)} chronic qualifications; loaded in {w.load_s:.2f} s"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="yidi", description="Cross-region medical insurance settlement engine")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("replay", help="replay a request stream (SETTLEMENT.md section 9)")
    r.add_argument("--world", required=True, help="world folder")
    r.add_argument("--in", dest="inp", required=True, help="requests, one JSON envelope per line")
    r.add_argument("--out", required=True, help="replies, one JSON line each")
    r.add_argument("--reference", action="store_true", help="use the plain-Python reference (slow; the oracle)")
    r.set_defaults(fn=_cmd_replay)

    c = sub.add_parser("check-world", help="load and validate a world folder")
    c.add_argument("--world", required=True)
    c.set_defaults(fn=_cmd_check_world)

    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
