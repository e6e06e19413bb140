"""The Context a condensation method receives from the condense stage.

A method reads what it needs through the context (all loaded lazily, so Random never loads a
teacher) and returns a :class:`vdc.condensed.CondensedSet`. It must be deterministic given
``ctx.seed``: draw randomness only from ``ctx.rng`` (numpy) and ``ctx.generator`` (torch, CPU).
Long methods checkpoint into ``ctx.workdir`` (undeclared, survives a failed job) and resume from it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vdc.config import Temporal, parse_temporal
from vdc.data.frames import Frames, VideoBank, load_bank


@dataclass
class Context:
    frames_path: Path
    ipc: int
    seed: int
    settings: dict[str, Any]        # the method's merged settings (config methods.<name> + overrides)
    stage: dict[str, Any]           # the full stage settings (dataset section, models, ...)
    device: torch.device
    workdir: Path                   # this job's private checkpoint folder
    teacher_paths: dict[str, Path] = field(default_factory=dict)  # arch -> trained weights
    experts_path: Path | None = None
    stats_paths: dict[str, Path] = field(default_factory=dict)    # arch -> EDC statistics file
    init_path: Path | None = None   # a condensed set to start from (EDC init: rded)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("vdc.condense"))

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def dataset(self) -> dict:
        return self.stage["dataset"]

    @property
    def temporal(self) -> Temporal:
        return parse_temporal(self.settings["temporal"])

    @property
    def clip_len(self) -> int:
        return int(self.dataset["clip_len"])

    @property
    def input_size(self) -> int:
        return int(self.dataset["input_size"])

    @cached_property
    def frames(self) -> Frames:
        return Frames(self.frames_path)

    @property
    def num_classes(self) -> int:
        return self.frames.num_classes

    @cached_property
    def train_bank(self) -> VideoBank:
        return load_bank(self.frames, "train", self.device)

    def teacher(self, arch: str | None = None) -> torch.nn.Module:
        """A trained network (eval mode, on the device); the configured teacher arch by default."""
        from vdc.formats.teacher import load_teacher

        arch = arch or self.stage["teacher_arch"]
        if arch not in self.teacher_paths:
            raise KeyError(f"no trained {arch} teacher was given to this condense job")
        return load_teacher(self.teacher_paths[arch], self.device)

    def base_attrs(self) -> dict:
        t = self.temporal
        return {"dataset": self.dataset["name"], "method": self.stage["method"], "ipc": self.ipc,
                "seed": self.seed, "t_c": t.t_c, "sampling": t.sampling, "interpolation": t.interpolation,
                "num_classes": self.num_classes, "frames_file": str(self.frames_path),
                "settings": self.settings}
