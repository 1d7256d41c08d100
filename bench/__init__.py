"""kiam benchmarks: every figure is printed next to a baseline measured in the same run.

Run with `make bench` (all) or `python -m bench NAME ...` (see `python -m bench --help`).
"""
