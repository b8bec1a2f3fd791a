"""What the maintenance check (contract section 12) costs the engine's hot path, side by side.

The engine computes the same mixed stream (engine.tools.synth: one-shot
settlements, pre-settlements, reversals, 1101, malformed requests; 20,000
requests at YIDI_BENCH_SCALE=1, batches of 1,024, compute only) three ways,
one after the other in every round, each on a fresh engine:

- `none`: no maintenance file (Engine.maintenance is None);
- `idle`: a file of 1,000 windows, none in force at the stream's times;
- `elsewhere`: windows in force through the whole stream over a region no
  person of the world is insured in, so every settlement takes the lookup by
  insured region and finds nothing.

The replies must be identical, and the extra info gives each round's times and
the ratios to `none`. Times are the process's CPU seconds, not the wall clock:
on a machine shared with other load, CPU time is what the engine itself spent.
To compare `none` with a build from before the check existed, run this file
from each checkout's own root (each imports its own `engine`), side by side.

    YIDI_BENCH_SCALE=1 pytest bench/test_bench_maintenance.py --benchmark-enable -o addopts="" -s
"""
from __future__ import annotations

import os
import statistics
import time

import orjson
import pytest

SCALE = float(os.environ.get("YIDI_BENCH_SCALE", "0.02"))
N_REQUESTS = max(500, int(20_000 * SCALE))
BATCH = 1024
ROUNDS = int(os.environ.get("YIDI_BENCH_ROUNDS", "5" if SCALE >= 0.5 else "2"))
HEADER = "admdvs,begin,end,reason\n"


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    from engine.tools import synth
    from engine.world.loader import load_world

    d = tmp_path_factory.mktemp("maintenance")
    world_dir = str(d / "world")
    synth.gen_world(world_dir, seed=5, provinces=31, catalogue_per_province=max(500, int(5_000 * SCALE)),
                    persons=max(2_000, int(50_000 * SCALE)))
    bodies = [orjson.dumps(e) for e in synth.gen_requests(world_dir, N_REQUESTS, seed=5)]
    return load_world(world_dir), bodies


def schedules() -> dict[str, object]:
    try:
        from engine.core.maintenance import parse_schedule
    except ImportError:  # a checkout from before the check: `none` alone, to compare with this one's
        return {"none": None}

    idle = HEADER + "".join(f"{p}0000,2030-01-{1 + i % 28:02d} 0{i % 10}:00:00,2030-01-{1 + i % 28:02d} 10:00:00,"
                            f"window {i}\n" for i, p in enumerate(["11", "44", "43", "51"] * 250))
    elsewhere = HEADER + "710000,2000-01-01 00:00:00,2099-12-31 00:00:00,all the time and nobody's\n"
    return {"none": None, "idle": parse_schedule(idle), "elsewhere": parse_schedule(elsewhere)}


def compute(world, bodies: list[bytes], schedule) -> tuple[float, list[bytes]]:
    """CPU seconds of handle_batch over the stream on a fresh engine, and the replies."""
    from engine.contract.wire import JSON
    from engine.core.engine import Engine, Request

    engine = Engine(world, clock="inf_time")
    if schedule is not None:
        engine.maintenance = schedule
    replies = []
    t0 = time.process_time()
    for i in range(0, len(bodies), BATCH):
        replies += engine.handle_batch([Request(b) for b in bodies[i:i + BATCH]])
    seconds = time.process_time() - t0
    return seconds, [JSON.encoder.encode(r) for r in replies]


@pytest.mark.benchmark(group="maintenance check: the engine's compute, side by side")
def test_maintenance_check_cost(benchmark, stream):
    world, bodies = stream
    variants = schedules()
    times: dict[str, list[float]] = {k: [] for k in variants}
    replies: dict[str, list[bytes]] = {}

    def one_round():
        order = list(variants)
        if len(times["none"]) % 2:
            order.reverse()  # ABC CBA: drift of the machine falls on every variant alike
        for name in order:
            seconds, replies[name] = compute(world, bodies, variants[name])
            times[name].append(seconds)

    benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=0)
    assert all(replies[k] == replies["none"] for k in replies)
    assert not any(b'"E_MAINTENANCE"' in r for r in replies["none"])
    benchmark.extra_info["requests"] = N_REQUESTS
    benchmark.extra_info["seconds"] = {k: [round(s, 4) for s in v] for k, v in times.items()}
    others = [k for k in variants if k != "none"]
    for k in others:
        ratios = [a / b for a, b in zip(times[k], times["none"])]
        benchmark.extra_info[f"{k}/none"] = round(statistics.median(ratios), 4)
    print(f"\nmaintenance check, {N_REQUESTS} requests, median CPU s: "
          + ", ".join(f"{k} {statistics.median(v):.4f}" for k, v in times.items())
          + "; ratios to none: " + ", ".join(f"{k} {benchmark.extra_info[f'{k}/none']}" for k in others))
