"""Simulated federations: many virtual clients on a few real workers, local or on Ray."""

from __future__ import annotations

__all__: list[str] = []
