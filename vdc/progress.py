"""Progress of a long stage, readable in a log file and on a terminal.

Snakemake sends every stage's output to ``logs/…``, where a progress bar turns itself off. So a long
loop reports through :class:`Progress`: a log line at every milestone the caller marks (an epoch, a
test pass, a checkpoint) and at least every ``every_s`` seconds in between::

    teacher minic3d: epoch 12/36 (33%), 0.52 epoch/s, elapsed 0:00:23, ETA 0:00:46 | loss 1.234 top1 45.0

On a terminal a tqdm bar is shown as well. The rate and ETA count only the steps done in this
process (a resumed job does not claim the steps it skipped).
"""
from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta


def _clock(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class Progress:
    """Report ``total`` steps of ``what`` (e.g. "evaluate minic3d") counted in ``unit``s."""

    def __init__(self, total: int, what: str, log: logging.Logger, unit: str = "step", initial: int = 0,
                 every_s: float = 30.0):
        self.total, self.what, self.log, self.unit = int(total), what, log, unit
        self.done = self._start = int(initial)
        self.every_s = float(every_s)
        self.t0 = self._last = time.monotonic()
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.done, desc=what, unit=unit, leave=False)

    def line(self, **metrics) -> str:
        elapsed = time.monotonic() - self.t0
        ran = self.done - self._start
        rate = ran / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        text = (f"{self.what}: {self.unit} {self.done}/{self.total} ({pct:.0f}%), {rate:.3g} {self.unit}/s, "
                f"elapsed {_clock(elapsed)}, ETA {_clock(eta) if eta == eta else '?'}")
        if metrics:
            text += " | " + " ".join(f"{k} {_fmt(v)}" for k, v in metrics.items())
        return text

    def update(self, n: int = 1, milestone: bool = False, **metrics) -> None:
        """Count ``n`` steps; write a line when ``milestone``, at the end, or ``every_s`` after the last."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if metrics:
                self._bar.set_postfix({k: _fmt(v) for k, v in metrics.items()}, refresh=False)
        now = time.monotonic()
        if milestone or self.done >= self.total or now - self._last >= self.every_s:
            self._last = now
            self.log.info(self.line(**metrics))

    def due(self) -> bool:
        """True when the next :meth:`update` would write a line by time (callers that must synchronise
        the device to read a metric can ask first)."""
        return time.monotonic() - self._last >= self.every_s

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
