"""Benchmarks: ``python -m vdc.bench <name>`` (extract, protocol, datm, edc, costs, gpucheck).

Each benchmark measures against a baseline in the same run and prints ratios; none is a timed test.
``costs`` writes the bench file the plan reads (``python -m vdc plan``); ``anchors.py`` holds the
built-in H200 figures of gpu-anchors.md; ``gpucheck`` is what scripts/gpu-check.sh runs (docs/gpu.md);
``timing.py`` holds what they share (``timed``, ``sync``, ``SavedBytes``).
"""
