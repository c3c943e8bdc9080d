"""The alternatives fedproto is measured against, each a server (run in its own process) and a client.

- :mod:`~benchmarks.baselines.ws_bare`: bare ``websockets``, the same bytes with no protocol on top
  (the ceiling for bulk transfer, and an echo for small requests);
- :mod:`~benchmarks.baselines.pysyft_wire`: PySyft 0.2's websocket wire (msgpack, hex in text frames);
- :mod:`~benchmarks.baselines.grpc_raw`: grpcio unary calls carrying raw bytes (Flower's transport);
- :mod:`~benchmarks.baselines.flower_side`: Flower itself, run in its own virtual environment;
- :mod:`~benchmarks.baselines.flower_simulation`: Flower's Ray simulation, in the same environment.
"""
