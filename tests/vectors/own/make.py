"""Make the project's own step-wise conformance vectors (tests/vectors/own/README.md).

    python tests/vectors/own/make.py [--out DIR]

A seeded mixed stream of engine.tools.synth (most visits step-wise, section 11; the rest
one-shot, section 7) on the public vectors' world, and the reply the plain-Python
reference (engine.reference) gives each request, replayed in order on the `inf_time`
clock. The same code and seed write the same bytes: tests/test_own_vectors.py
regenerates them and compares.
"""
from __future__ import annotations

import argparse
import os
import sys

import orjson

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
WORLD = os.path.join(ROOT, "tests", "vectors", "world")
OUT = os.path.join(HERE, "stepwise")

# The stream: what engine.tools.synth.gen_stream is asked for. More reversals and requests wrong
# on purpose than a day has, so that the state machine's refusals and 2601 appear in a short file.
STREAM = dict(n=1500, seed=2026, flow="mixed", stepwise_share=0.8, start="2026-11-20", days=3,
              malformed_share=0.03, reversal_share=0.03)


def expected_form(reply: dict) -> dict:
    """The vectors' form of a reply (tests/vectors/README.md): {infcode, output} for a success,
    {infcode, err_code} for a refusal."""
    if reply["infcode"] == 0:
        return {"infcode": 0, "output": reply["output"]}
    return {"infcode": reply["infcode"], "err_code": reply["err_code"]}


def make(out_dir: str) -> tuple[int, int]:
    """Write requests.jsonl and expected.jsonl into out_dir; (requests, successes)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from engine.reference.oracle import ReferenceEngine
    from engine.tools.synth import gen_stream
    from engine.world.loader import load_world

    params = dict(STREAM)
    envelopes = gen_stream(WORLD, params.pop("n"), **params).envelopes
    engine = ReferenceEngine(load_world(WORLD))
    os.makedirs(out_dir, exist_ok=True)
    ok = 0
    with open(os.path.join(out_dir, "requests.jsonl"), "wb") as rq, \
            open(os.path.join(out_dir, "expected.jsonl"), "wb") as ex:
        for env in envelopes:
            body = orjson.dumps(env)
            reply = expected_form(engine.handle_body(body))
            ok += reply["infcode"] == 0
            rq.write(body + b"\n")
            ex.write(orjson.dumps(reply) + b"\n")
    return len(envelopes), ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=OUT, help=f"folder to write (default {os.path.relpath(OUT, ROOT)})")
    a = p.parse_args()
    n, ok = make(a.out)
    print(f"wrote {n} requests and their replies ({ok} successes) to {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
