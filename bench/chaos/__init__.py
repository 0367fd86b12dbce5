"""Chaos suites: break durably on purpose and compare what survived with an independent ledger.

``python -m bench.chaos --host cpython --kills 300`` runs several ``durably worker`` processes
on one database file, SIGKILLs, SIGSTOPs and SIGTERMs them while hundreds of multi-step runs
execute, then checks the ledger the job bodies wrote (``ledger.py``) against the runs and
steps tables (``checks.py``) and prints one summary line. See docs/chaos.md.
"""
