"""Side-by-side benchmarks of toolcall's call paths against the designs it replaces.

``python -m bench`` (or ``make bench``) runs every scenario, interleaved over
several rounds, prints a table and writes ``bench/results/latest.json``. See
docs/performance.md for what each scenario measures and the latest numbers.
"""
