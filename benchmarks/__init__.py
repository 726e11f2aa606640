"""`make bench`: modelport against the Flask prototype it replaces, a naive FastAPI port and two
ceilings, on one pinned core each, plus 10,000-row requests and memory across workers.

Run `python -m benchmarks --help`; README's "Performance" section explains the comparison.
"""
