"""Reading an evaluation JSON (``results/eval/...json``, written by ``vdc.evaluate``; its fields are
listed in docs/design.md): shared by the tables and the report, so neither imports the other."""
from __future__ import annotations


def accuracy_by_epoch(js: dict, metric: str) -> dict[int, float]:
    """epoch -> test accuracy of one evaluation JSON: its `tests` (every test_every epochs), else its `late`."""
    pts = {int(p["epoch"]): float(p[metric]) for p in js.get("late") or []}
    pts.update({int(p["epoch"]): float(p[metric]) for p in js.get("tests") or []})
    return pts
