"""bench/log_cost.py, small: the request log's calls on the hub's shapes of batches, every line written."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import log_cost  # noqa: E402


def test_log_cost_runs_and_writes_every_line(tmp_path):
    r = log_cost.measure(2_000, str(tmp_path))
    assert set(r) == set(log_cost.SHAPES)
    for shape in r.values():
        assert shape["written"] == shape["lines"] and shape["dropped"] == 0, shape
