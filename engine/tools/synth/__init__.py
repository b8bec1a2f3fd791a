"""Deterministic synthetic worlds and request streams (docs/contract.md sections 2, 5 and 7).

`gen_world` writes a world folder that `engine.world.load_world` accepts;
`gen_requests` draws a stream of envelopes against such a world, in the shape of
the public `spec/vectors/requests.jsonl`. Both are driven by one integer seed:
the same seed and arguments give byte-identical files and the same envelopes.
Each file (and the request stream) draws from its own NumPy generator, derived
from the seed and the file's name, so a change in how persons are drawn never
shifts the catalogue.

Everything big is drawn as NumPy columns and formatted with Arrow compute
kernels; no Python loop runs once per catalogue row or per person. The request
stream does build one dict per envelope and per fee line (that is its output),
but every number in them was drawn and formatted column-wise first.

Money never passes through a float on its way out: amounts are drawn as floats
(a price distribution is a float by nature), rounded once to integer fen or
micro-yuan, and from there on only integers are formatted.
"""
from __future__ import annotations

from engine.tools.synth.flows import FLOWS, MIXED_STEPWISE_SHARE, STEP_ANOMALIES, Note
from engine.tools.synth.stream import ANOMALIES, Stream, gen_requests, gen_stream, write_requests_jsonl
from engine.tools.synth.view import WorldView, world_view
from engine.tools.synth.world import gen_world

__all__ = ["gen_world", "gen_requests", "gen_stream", "world_view", "write_requests_jsonl", "WorldView", "Stream",
           "Note", "ANOMALIES", "STEP_ANOMALIES", "FLOWS", "MIXED_STEPWISE_SHARE"]
