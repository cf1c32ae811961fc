"""Servers under test; each runs as ``python -m bench.servers.<name>`` in its own process."""
