"""fedproto's benchmarks: every claim about speed or memory, measured beside its alternatives.

``python -m benchmarks`` (``make bench``) runs every workload, writes ``benchmarks/results/<name>.json``
and regenerates ``docs/performance.md``; ``--quick`` runs a tiny version of each (what the smoke test
uses) and ``--only NAME`` one workload. Each workload measures fedproto and its baselines in the same run
on the same machine and reports ratios, never absolute numbers alone:

- ``bulk``: moving float32 tensors to a worker and back (fedproto, bare ``websockets``, PySyft 0.2's
  wire, gRPC unary calls), throughput and peak resident memory on each side;
- ``small``: ping and a small custom call, latency and requests per second with 1, 8 and 64 in flight;
- ``fit``: the same training run locally and through ``fit`` on a worker;
- ``federated``: FedAvg rounds against Flower on the same model, data shards and clients;
- ``simulation``: 1,000 simulated clients on Ray (``fedproto.simulation``) against Flower's Ray
  simulation, with the coordinator's peak memory and the cost of one more client per round.
- ``aggregation``: the coordinator's peak memory while aggregating N updates, streaming against
  buffered (N=10 and N=100).

This package never imports fedproto at import time, so that the Flower side (run in its own virtual
environment, see ``baselines/flower_side.py``) can share :mod:`benchmarks.models`.
"""
