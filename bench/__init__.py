"""Benchmarks for durably, side by side with its peers and the SQLite floor (issue 5).

Run ``python -m bench --quick`` (under a minute) or ``python -m bench`` (the full suite).
"""
