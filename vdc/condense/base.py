"""The Context a condensation method receives from the condense stage.

A method reads what it needs through the context (all loaded lazily, so Random never loads a
teacher) and returns a :class:`vdc.condensed.CondensedSet`. It must be deterministic given
``ctx.seed``: draw randomness only from ``ctx.rng`` (numpy) and ``ctx.generator`` (torch, CPU).

Settings: ``ctx.stage`` is the job's full settings (``vdc.config.stage_settings(cfg, "condense", ...)``:
dataset section, IPC, seed, models, ...) and ``ctx.settings`` its part ``ctx.stage["settings"]``, the
method's merged settings (config ``methods.<name>`` + overrides); the schema has filled every default.

A long method keeps its resumable state in ``ctx.checkpoint(name)`` (vdc/resume.py): a checkpoint
in the job's folder ``ctx.workdir`` tied to the job's settings, the contents of every file the job
was given (frames, teachers, statistics, experts, init set) and the code of the job; the stage
removes it once the condensed set is written.
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
from vdc.fingerprint import job_code
from vdc.resume import Checkpoint, job_identity


@dataclass
class Context:
    frames_path: Path
    ipc: int
    seed: int
    settings: dict[str, Any]        # the method's merged settings (config methods.<name> + overrides)
    stage: dict[str, Any]           # the full stage settings (dataset section, models, ...)
    device: torch.device
    workdir: Path                   # this job's private checkpoint folder (created on the first save)
    teacher_paths: dict[str, Path] = field(default_factory=dict)  # arch -> trained weights
    experts_path: Path | None = None
    stats_paths: dict[str, Path] = field(default_factory=dict)    # arch -> EDC statistics file
    init_path: Path | None = None   # a condensed set to start from (EDC init: rded)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("vdc.condense"))

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.workdir = Path(self.workdir)
        self._checkpoints: list[Checkpoint] = []

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
        return load_bank(self.frames, "train", self.device, dataset=self.dataset)

    def teacher(self, arch: str | None = None) -> torch.nn.Module:
        """A trained network (eval mode, on the device); the configured teacher arch by default."""
        from vdc.formats.teacher import load_teacher

        arch = arch or self.stage["teacher_arch"]
        if arch not in self.teacher_paths:
            raise KeyError(f"no trained {arch} teacher was given to this condense job")
        return load_teacher(self.teacher_paths[arch], self.device)

    @property
    def job(self) -> str:
        """The job's name in messages, e.g. ``condense ucf101/edc ipc1 tc16-sliding-none seed0``."""
        return (f"condense {self.dataset['name']}/{self.stage['method']} ipc{self.ipc} {self.temporal.tag} "
                f"seed{self.seed}")

    def inputs(self) -> dict[str, Path]:
        """Every file this job was given, by role (frames, teacher:<arch>, stats:<arch>, experts, init)."""
        roles = {"frames": self.frames_path, "experts": self.experts_path, "init": self.init_path}
        roles.update({f"teacher:{a}": p for a, p in self.teacher_paths.items()})
        roles.update({f"stats:{a}": p for a, p in self.stats_paths.items()})
        return {role: p for role, p in roles.items() if p is not None}

    def checkpoint(self, name: str) -> Checkpoint:
        """The resumable state ``<workdir>/<name>.pt`` of this job (vdc/resume.py): resumed only by a job
        with the same settings (``ctx.stage``), the same contents of every input file and the same code."""
        identity = job_identity(self.stage, self.inputs(), job_code("condense", self.stage))
        ckpt = Checkpoint(self.workdir / f"{name}.pt", identity, self.log)
        self._checkpoints.append(ckpt)
        return ckpt

    def remove_checkpoints(self) -> None:
        """Delete every checkpoint of this job (the stage calls it once the condensed set is written)."""
        for ckpt in self._checkpoints:
            ckpt.remove()

    def base_attrs(self) -> dict:
        t = self.temporal
        return {"dataset": self.dataset["name"], "method": self.stage["method"], "ipc": self.ipc,
                "seed": self.seed, "t_c": t.t_c, "sampling": t.sampling, "interpolation": t.interpolation,
                "num_classes": self.num_classes, "frames_file": str(self.frames_path),
                "settings": self.settings}
