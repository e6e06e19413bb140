"""The condensed-set file: what every condensation method writes and ``evaluate`` reads.

Layout of ``results/condensed/<dataset>/<method>/ipc<IPC>-<temporal>-seed<S>.h5`` (README, "File formats")::

    /clips          [N, T_c, H, W, 3]  uint8 (selected real clips, pixel values 0..255) or float16
                                        (distilled clips: RGB in [0, 1] before normalisation, unclipped;
                                        attrs value_range says which)
    /labels         int64   [N]        hard labels (class ids)
    /label_logits   float32 [N, K]     optional: learned label logits (DATM), used as its soft labels
    /source_video   int64   [N]        video id in the frames file each clip came from (-1: none)
    /source_frames  int64   [N, T_c]   optional: frame indices of the source video (selection methods)
    /history/<name> float64 [I]        optional: the optimisation history of a distilled set, one value per
                                        iteration (DATM: loss, alpha, start_epoch, upper, expert, skipped;
                                        EDC: loss, ce, bn, network (index into attrs networks), chunk)
    attrs: dataset, method, ipc, t_c, sampling, interpolation, seed, num_classes, value_range
           ("uint8" or "unit_float"), settings (JSON), frames_file, vdc_version, created,
           content_id (hash of the arrays and attributes above but `created`: two equal sets have equal ids)

H x W may differ between sets (selected clips keep the storage size; distilled ones are at the
network's input size): the evaluation crops/resizes to its input size either way.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vdc import __version__
from vdc.errors import InputError, h5_dataset, open_h5
from vdc.resume import CONTENT_ID_ATTR, ContentHasher
from vdc.utils import atomic_path


ALL_CLIPS = 0  # the IPC of a set holding every training clip (the `full` pseudo-method): path ipc0-...


@dataclass
class CondensedSet:
    clips: np.ndarray                      # [N, T_c, H, W, 3] uint8 or float16/float32 in [0, 1]
    labels: np.ndarray                     # [N] int
    source_video: np.ndarray | None = None  # [N] int, -1 = synthetic without a single source
    source_frames: np.ndarray | None = None  # [N, T_c]
    label_logits: np.ndarray | None = None  # [N, K]
    attrs: dict[str, Any] = field(default_factory=dict)
    history: dict[str, np.ndarray] | None = None  # name -> [iterations]

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.source_video is None:
            self.source_video = np.full(len(self.labels), -1, np.int64)
        if len(self.clips) != len(self.labels):
            raise ValueError(f"{len(self.clips)} clips but {len(self.labels)} labels")
        if self.clips.ndim != 5 or self.clips.shape[-1] != 3:
            raise ValueError(f"clips must be [N, T, H, W, 3], got {self.clips.shape}")

    @property
    def value_range(self) -> str:
        return "uint8" if self.clips.dtype == np.uint8 else "unit_float"

    def write(self, path: str | Path) -> None:
        """Atomically write the set (temp file, then rename), with a ``content_id`` attribute: the hash
        of the arrays and attributes written (vdc/resume.py ties checkpoints to it)."""
        clips = self.clips if self.clips.dtype == np.uint8 else self.clips.astype(np.float16)
        arrays = {"clips": clips, "labels": self.labels, "source_video": np.asarray(self.source_video, np.int64)}
        if self.source_frames is not None:
            arrays["source_frames"] = np.asarray(self.source_frames, np.int64)
        if self.label_logits is not None:
            arrays["label_logits"] = np.asarray(self.label_logits, np.float32)
        for name, values in (self.history or {}).items():
            arrays[f"history/{name}"] = np.asarray(values, np.float64)
        attrs = dict(self.attrs)
        attrs.setdefault("t_c", int(self.clips.shape[1]))
        attrs["value_range"] = self.value_range
        attrs["vdc_version"] = __version__
        attrs = {k: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v for k, v in attrs.items()}
        ident = ContentHasher()
        for name, a in arrays.items():
            ident.update(name, a)
        ident.update_text("attrs", json.dumps(attrs, sort_keys=True, default=str))
        attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        attrs[CONTENT_ID_ATTR] = ident.hexdigest()
        with atomic_path(path, suffix=".h5.tmp") as tmp:
            with h5py.File(tmp, "w") as h5:
                for name, a in arrays.items():
                    h5.create_dataset(name, data=a)
                for k, v in attrs.items():
                    h5.attrs[k] = v

    @classmethod
    def read(cls, path: str | Path) -> "CondensedSet":
        path = Path(path)
        fix = "rerun its condense job (snakemake -R condense, or delete the file and rerun)"
        with open_h5(path, "condensed set", fix) as h5:
            for key in ("clips", "labels"):
                h5_dataset(h5, key, path, "condensed set", fix)
            attrs = {}
            for k, v in h5.attrs.items():
                if isinstance(v, str) and v[:1] in "[{":
                    try:
                        v = json.loads(v)
                    except json.JSONDecodeError:
                        pass
                attrs[k] = v.item() if isinstance(v, np.generic) else v
            try:
                return cls(clips=h5["clips"][:], labels=h5["labels"][:],
                           source_video=h5["source_video"][:] if "source_video" in h5 else None,
                           source_frames=h5["source_frames"][:] if "source_frames" in h5 else None,
                           label_logits=h5["label_logits"][:] if "label_logits" in h5 else None,
                           attrs=attrs,
                           history={k: v[:] for k, v in h5["history"].items()} if "history" in h5 else None)
            except (OSError, ValueError) as exc:
                raise InputError(f"{path}: cannot read this condensed set ({' '.join(str(exc).split())[:160]}); "
                                 f"{fix}") from None

    def clips_unit_float(self):
        """Clips as a float32 torch tensor in [0, 1] pixel space, [N, T, H, W, 3]."""
        import torch

        t = torch.from_numpy(np.ascontiguousarray(self.clips))
        return t.float() / 255.0 if self.clips.dtype == np.uint8 else t.float()
