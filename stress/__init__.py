"""The reliability bench: load, hostile input, resource abuse and faults against a worker on loopback.

``python -m stress`` (``make stress``) runs the full-size load and the network fuzzer and writes
docs/reliability.md; the test suite runs short versions of the same code (``tests/stress/``).
"""

__all__: list[str] = []
