"""Shared test fixtures: one tiny frames file, one tiny config, and a simulated kill for resume tests.

Fast lane: ``pytest -m "not slow"`` (about a minute); CI runs everything (``.ci/run``).

* ``make_frames(path, classes=3, train_per_class=3, test_per_class=2, lengths=(10, 30), size=(52, 56),
  seed=0)`` writes noise videos whose mean brightness encodes the class (learnable in a few steps);
* ``frames_file``: such a file with the defaults, shared by a test module;
* ``tiny_config(**sections)``: a validated config for dataset ``tiny`` (the frames above: 52x56
  frames, 48-px input, MiniC3D at width 1/8) with ``sections`` merged over it;
* ``kill_after(n)``: the n-th checkpoint save of any long job raises KeyboardInterrupt after writing,
  as a kill would leave it (``vdc.resume.Checkpoint.save``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vdc.config import deep_merge, validate_config
from vdc.data.frames import write_frames

torch.set_num_threads(1)

TINY_SIZE = (52, 56)


def _make_frames(path, classes=3, train_per_class=3, test_per_class=2, lengths=(10, 30), size=TINY_SIZE, seed=0):
    rng = np.random.default_rng(seed)
    videos, labels, splits = [], [], []
    for split, per in ((0, train_per_class), (1, test_per_class)):
        for c in range(classes):
            for _ in range(per):
                n = int(rng.integers(lengths[0], lengths[1] + 1))
                v = rng.integers(0, 60, (n, *size, 3)).astype(np.uint8) + np.uint8(60 * c % 196)
                videos.append(v), labels.append(c), splits.append(split)
    write_frames(path, videos, labels, splits, [f"class{c}" for c in range(classes)])
    return path


@pytest.fixture(scope="session")
def make_frames():
    return _make_frames


@pytest.fixture(scope="module")
def frames_file(tmp_path_factory):
    return _make_frames(tmp_path_factory.mktemp("frames") / "tiny.h5")


@pytest.fixture()
def tiny_config(tmp_path):
    def build(**sections) -> dict:
        cfg = {
            "device": "cpu", "workdir": str(tmp_path / "work"), "results": str(tmp_path / "results"),
            "study": {"datasets": ["tiny"], "methods": ["random"], "ipc": [1], "seeds": [0]},
            "datasets": {"tiny": {"format": "list", "video_root": "v", "annotations": "a",
                                  "storage_size": list(TINY_SIZE), "input_size": 48}},
            "models": {a: {"width": 0.125} for a in ("minic3d", "minic3d_in", "i3d_r18", "slowonly_r18")}
                      | {"r2plus1d_r18": {"width": 0.0625}},
            "teacher": {"epochs": 2, "batch": 4, "warmup_epochs": 1, "milestones": [1], "eval_every": 1},
            "experts": {"num_experts": 2, "epochs": 2, "batch": 4},
            "evaluate": {"epochs": 2, "late_epochs": [0], "test_batch": 8},
            "methods": {"random": {}},
        }
        return validate_config(deep_merge(cfg, sections))
    return build


@pytest.fixture()
def kill_after(monkeypatch):
    """kill_after(n): the n-th Checkpoint.save from now on raises KeyboardInterrupt once the file is
    written; kill_after(None) restores normal saving. Returns the list of saved states."""
    from vdc.resume import Checkpoint

    real = Checkpoint.save
    saved = []

    def arm(n):
        if n is None:
            monkeypatch.setattr(Checkpoint, "save", real)
            return saved

        def save_then_die(self, state):
            real(self, state)
            saved.append(state)
            if len(saved) == n:
                raise KeyboardInterrupt(f"killed after checkpoint {n}")

        monkeypatch.setattr(Checkpoint, "save", save_then_die)
        return saved
    return arm
