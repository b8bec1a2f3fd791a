"""The `yidi` command line."""
from __future__ import annotations

import argparse
import sys


def _cmd_replay(a: argparse.Namespace) -> int:
    from .replay import replay
    from .world import WorldError

    if a.reference and a.data:
        print("yidi: --reference keeps no store: drop --data", file=sys.stderr)
        return 2
    try:
        stats = replay(a.world, a.inp, a.out, reference=a.reference, data_dir=a.data)
    except WorldError as e:
        print(f"yidi: world refused: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from .store import StoreError

        if not isinstance(e, StoreError):
            raise
        print(f"yidi: store: {e}", file=sys.stderr)
        return 2
    print(
        f"replayed {stats['requests']} requests: world {stats['load_s']:.2f} s, "
        f"replay {stats['replay_s']:.2f} s",
        file=sys.stderr,
    )
    return 0


def _cmd_check(a: argparse.Namespace) -> int:
    from .check import check_store

    return check_store(a.data, out=lambda line: print(line, flush=True))


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


def _cmd_serve(a: argparse.Namespace) -> int:
    import logging
    from dataclasses import fields

    from .server import Limits, serve
    from .world import WorldError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not a.tcp and not a.http:
        print("yidi: serve needs --tcp HOST:PORT, --http HOST:PORT or both", file=sys.stderr)
        return 2
    try:
        limits = Limits(**{f.name: getattr(a, f.name) for f in fields(Limits)})
    except ValueError as e:
        print(f"yidi: {e}", file=sys.stderr)
        return 2
    try:
        return serve(a.world, a.data, a.tcp, a.http, limits, loop=a.loop)
    except WorldError as e:
        print(f"yidi: world refused: {e}", file=sys.stderr)
        return 2


def _add_serve(sub) -> None:
    from dataclasses import fields

    from .server import Limits

    s = sub.add_parser("serve", help="run the hub: framed TCP and HTTP (SETTLEMENT.md section 7)")
    s.add_argument("--world", required=True, help="world folder")
    s.add_argument("--data", required=True, help="data folder of the durable store")
    s.add_argument("--tcp", metavar="HOST:PORT", help="framed MessagePack listener (port 0: any)")
    s.add_argument("--http", metavar="HOST:PORT", help="HTTP gateway, /metrics and /healthz (port 0: any)")
    s.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    for f in fields(Limits):
        s.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=type(f.default), default=f.default,
                       metavar=f.name.upper(), help=f"(default {f.default})")
    s.set_defaults(fn=_cmd_serve)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="yidi", description="Cross-region medical insurance settlement engine")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("replay", help="replay a request stream (SETTLEMENT.md section 9)")
    r.add_argument("--world", required=True, help="world folder")
    r.add_argument("--in", dest="inp", required=True, help="requests, one JSON envelope per line")
    r.add_argument("--out", required=True, help="replies, one JSON line each")
    r.add_argument("--reference", action="store_true", help="use the plain-Python reference (slow; the oracle)")
    r.add_argument("--data", help="keep the durable store in this folder (seeded when new, continued otherwise)")
    r.set_defaults(fn=_cmd_replay)

    k = sub.add_parser("check", help="verify a store: ledger, accounts, persons against the journal")
    k.add_argument("--data", required=True, help="data folder of the store")
    k.set_defaults(fn=_cmd_check)

    c = sub.add_parser("check-world", help="load and validate a world folder")
    c.add_argument("--world", required=True)
    c.set_defaults(fn=_cmd_check_world)

    _add_serve(sub)

    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
