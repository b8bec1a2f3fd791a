"""Fuzz the decoders with atheris: whatever a request holds, the engine answers it and a refusal changes nothing.

    python bench/fuzz.py --target envelope --runs 1000000     # the documented full campaign
    python bench/fuzz.py --target feedetail --runs 1000000
    python bench/fuzz.py --target envelope --runs 20000       # what the test suite runs

Targets:
- envelope: one body through `Engine.handle_batch` over the conformance world,
  as JSON or MessagePack (the first byte chooses). The seeds are the
  conformance requests in both encodings, so the mutations reach deep into
  valid envelopes. Each input must be answered with exactly one reply; a
  refused one (infcode -1) must leave no change to commit and the persons'
  state arrays as they were.
- feedetail: `FeeBuffer.parse` over raw fee lines, which must either decline
  (leaving the buffer as it was) or read exactly what msgspec and
  `gather_lines` read.

Each run ends with one line `fuzz: TARGET: N inputs, 0 failures` (atheris
exits non-zero and prints the input on the first failure, and saves it as
crash-*). libFuzzer's own flags (`-max_len=`, `-jobs=`) may follow `--`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile

# Coverage guides atheris only through Python code: by default the control plane
# runs from its source (YIDI_INTERPRETED, the same source the build compiles), so
# the fuzzer sees its branches; --compiled fuzzes the build itself.
if "--compiled" not in sys.argv:
    os.environ["YIDI_INTERPRETED"] = "1"

import atheris  # noqa: E402
import msgspec  # noqa: E402
import numpy as np  # noqa: E402

from core_ext import _lines  # noqa: E402
from engine.contract.wire import JSON, MSGPACK, FeeLine  # noqa: E402
from engine.core.engine import Engine, Request  # noqa: E402
from engine.world.loader import load_world  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(ROOT, "tests", "vectors")
CLOCK = "2026-11-20 10:00:00"
MAX_LEN_BYTES = 64 << 10  # inputs up to this long: a body of dozens of fee lines


def _seeds(folder: str) -> None:
    """The conformance requests, as JSON (first byte 0) and as MessagePack (first byte 1)."""
    with open(os.path.join(VECTORS, "requests.jsonl"), "rb") as f:
        for i, line in enumerate(f):
            env = json.loads(line)
            for tag, body in ((b"\x00", line.strip()), (b"\x01", msgspec.msgpack.encode(env))):
                with open(os.path.join(folder, f"seed-{i}-{tag[0]}"), "wb") as out:
                    out.write(tag + body)


def _state_digest(engine: Engine) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(dir(engine.state)):
        v = getattr(engine.state, name)
        if isinstance(v, np.ndarray):
            h.update(name.encode())
            h.update(v.tobytes())
    return h.digest()


class EnvelopeTarget:
    def __init__(self) -> None:
        self.engine = Engine(load_world(os.path.join(VECTORS, "world")), clock="inf_time")
        self.digest = _state_digest(self.engine)
        self.runs = 0
        self.total = 0

    def __call__(self, data: bytes) -> None:
        self.runs += 1
        _done(self)
        if not data:
            return
        codec = MSGPACK if data[0] & 1 else JSON
        replies = self.engine.handle_batch([Request(data[1:], codec, CLOCK)])
        assert len(replies) == 1, replies
        changes = self.engine.take_changes()
        if replies[0].infcode != 0:
            assert not changes, (replies[0], changes)
            digest = _state_digest(self.engine)
            assert digest == self.digest, f"a refusal changed the persons' state: {replies[0]}"
        else:
            self.digest = _state_digest(self.engine)


_DECODE = {True: msgspec.json.Decoder(list[FeeLine] | None, float_hook=str),
           False: msgspec.msgpack.Decoder(list[FeeLine] | None)}


def _fee_value(fdp: atheris.FuzzedDataProvider) -> object:
    """A value for a fee line's field: mostly the shapes hospital systems send, sometimes anything."""
    kind = fdp.ConsumeIntInRange(0, 9)
    if kind <= 3:  # a decimal as text
        return f"{fdp.ConsumeIntInRange(-10**9, 10**12)}.{fdp.ConsumeIntInRange(0, 10**7)}"[: fdp.ConsumeIntInRange(0, 24)]
    if kind == 4:
        return fdp.ConsumeInt(8)
    if kind == 5:
        return fdp.ConsumeRegularFloat()
    if kind == 6:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 30))
    if kind == 7:
        return None
    if kind == 8:
        return [fdp.ConsumeInt(2)] * fdp.ConsumeIntInRange(0, 3)
    return f"2026-{fdp.ConsumeIntInRange(0, 13):02d}-{fdp.ConsumeIntInRange(0, 32):02d} 0{fdp.ConsumeIntInRange(0, 9)}:00:00"


FEE_FIELDS = ("feedetl_sn", "med_list_codg", "det_item_fee_sumamt", "cnt", "pric", "fee_ocur_time", "memo")


class FeedetailTarget:
    """Fee lines drawn from the input's bytes, encoded, then parsed both ways."""

    def __init__(self) -> None:
        self.runs = 0
        self.total = 0

    def __call__(self, data: bytes) -> None:
        self.runs += 1
        _done(self)
        fdp = atheris.FuzzedDataProvider(data)
        as_json = fdp.ConsumeBool()
        lines = []
        for _ in range(fdp.ConsumeIntInRange(0, 8)):
            line = {}
            for name in FEE_FIELDS:
                if fdp.ConsumeIntInRange(0, 7):
                    line[name] = _fee_value(fdp)
            lines.append(line)
        raw = (msgspec.json.encode if as_json else msgspec.msgpack.encode)(lines)
        if fdp.ConsumeBool():  # cut or patched bytes too
            cut = fdp.ConsumeIntInRange(0, len(raw))
            raw = raw[:cut] + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))
        buf = _lines.FeeBuffer(2)
        got = buf.parse(raw, as_json)
        try:
            want = _DECODE[as_json].decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            want = None
        if got < 0:
            assert buf.n == 0 and buf.codes == [] and buf.sns == [], "a declined parse left lines behind"
            return
        assert want is not None, f"parse accepted what msgspec refuses: {raw!r}"
        assert got == len(want or []), (got, raw)
        assert buf.codes == [ln.med_list_codg for ln in want or []], raw


TARGETS = {"envelope": EnvelopeTarget, "feedetail": FeedetailTarget}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", choices=sorted(TARGETS), default="envelope")
    ap.add_argument("--runs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--compiled", action="store_true", help="fuzz the compiled control plane (no coverage guidance)")
    ap.add_argument("libfuzzer", nargs="*", help="flags passed to libFuzzer after --")
    args = ap.parse_args(argv)
    target = TARGETS[args.target]()
    target.total = args.runs
    atheris.instrument_all()  # this script and the engine's Python modules, whichever finder loaded them
    with tempfile.TemporaryDirectory(prefix="yidi-fuzz-") as corpus:
        if args.target == "envelope":
            _seeds(corpus)
        atheris.Setup([sys.argv[0], f"-runs={args.runs}", f"-seed={args.seed}", f"-max_len={MAX_LEN_BYTES}",
                       "-print_final_stats=0", *args.libfuzzer, corpus], target)
        atheris.Fuzz()  # libFuzzer ends the process: the last input prints the summary (_done)
    return 0


def _done(target) -> None:
    if target.runs == target.total:
        print(f"fuzz: {type(target).__name__}: {target.runs} inputs, 0 failures", flush=True)


if __name__ == "__main__":
    sys.exit(main())
