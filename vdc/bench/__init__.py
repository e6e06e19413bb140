"""Benchmarks: ``python -m vdc.bench <name>`` (extract, protocol, datm, edc).

Each benchmark measures against a baseline in the same run and prints ratios; none is a timed test.
"""
