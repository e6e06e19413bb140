"""The ``condense`` stage: run one condensation method on one dataset at one IPC, temporal setting and seed.

    python -m vdc condense --frames results/frames/toy.h5 --out results/condensed/toy/rded/ipc1-tc8-naive-none-seed0.h5 \\
        --teacher minic3d=results/teachers/toy/minic3d.pt --config config.yaml --dataset toy \\
        --method rded --ipc 1 --seed 0

What the stage does, in order:

1. builds a :class:`vdc.condense.base.Context` (frames, teachers / experts / statistics / init set given
   as arguments, the stage settings and the method's merged settings, a private checkpoint folder
   ``vdc.resume.job_dir(<workdir>, "condense", <out>)``);
2. seeds everything from the job's seed (``ctx.rng`` / ``ctx.generator`` are seeded from it too);
3. looks the method up by its base name (``vdc.condense.get_method``; a ``module:`` setting names a
   module outside vdc) and calls it;
4. validates the result (:func:`validate_condensed`): labels in range, at most IPC clips per class and
   exactly IPC where the class has that many training videos, T_c frames per clip, spatial size =
   storage or input size, finite values, source videos that are training videos of the clip's class;
5. adds the common attributes (``ctx.base_attrs()`` plus wall time and device), writes the set
   atomically and removes the method's checkpoints (``ctx.checkpoint``).

Python entry point for tests and notebooks: :func:`run_condense`.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from vdc.cli import add_settings_arguments, resolve_settings
from vdc.condense import get_method
from vdc.condense.base import Context
from vdc.condensed import ALL_CLIPS, CondensedSet
from vdc.resume import job_dir
from vdc.utils import get_device, seed_everything

log = logging.getLogger("vdc.condense")


def run_condense(frames_path: str | Path, out_path: str | Path, settings: dict,
                 teacher_paths: dict[str, str | Path] | None = None, experts_path: str | Path | None = None,
                 stats_paths: dict[str, str | Path] | None = None, init_path: str | Path | None = None,
                 workdir: str | Path | None = None) -> CondensedSet:
    """Condense ``frames_path`` with the method of ``settings`` (``stage_settings(cfg, "condense", ...)``),
    validate the set and write it to ``out_path``. Returns the written set."""
    ms = settings["settings"]
    seed = int(settings["seed"])
    seed_everything(seed, settings["deterministic"])
    device = get_device(settings["device"])
    ctx = Context(frames_path=Path(frames_path), ipc=int(settings["ipc"]), seed=seed, settings=ms, stage=settings,
                  device=device, workdir=Path(workdir or job_dir(settings["workdir"], "condense", out_path)),
                  teacher_paths={a: Path(p) for a, p in (teacher_paths or {}).items()},
                  experts_path=Path(experts_path) if experts_path else None,
                  stats_paths={a: Path(p) for a, p in (stats_paths or {}).items()},
                  init_path=Path(init_path) if init_path else None)
    method = get_method(ms["base"], ms.get("module"))
    log.info("condense %s with %s (base %s), IPC %d, %s, seed %d, on %s", settings["dataset"]["name"],
             settings["method"], ms["base"], ctx.ipc, ms["temporal"], seed, device)
    t0 = time.time()
    try:
        cs = method(ctx)
        if not isinstance(cs, CondensedSet):
            raise TypeError(f"method '{settings['method']}' returned {type(cs).__name__}, not a CondensedSet")
        validate_condensed(cs, ctx)
        base = ctx.base_attrs()
        clash = sorted(k for k in cs.attrs if k in base and cs.attrs[k] != base[k])
        if clash:
            log.warning("method attrs %s differ from the stage's and are replaced by them", clash)
        cs.attrs = {**cs.attrs, **base, "wall_time_s": round(time.time() - t0, 3), "device": str(device)}
        cs.write(out_path)
        ctx.remove_checkpoints()
    finally:
        if "frames" in ctx.__dict__:  # the cached Frames handle, if the method opened it
            ctx.frames.close()
    log.info("wrote %s: %d clips of %s in %.1f s", out_path, len(cs.labels), cs.clips.shape[1:], time.time() - t0)
    return cs


def validate_condensed(cs: CondensedSet, ctx: Context) -> None:
    """Raise ValueError listing every way ``cs`` breaks the condensed-set contract for this job."""
    frames, k, ipc, t_c = ctx.frames, ctx.num_classes, ctx.ipc, ctx.temporal.t_c
    name = ctx.stage["method"]
    problems = []
    n = len(cs.labels)
    if n == 0:
        problems.append("the set is empty")
    if n and (cs.labels.min() < 0 or cs.labels.max() >= k):
        problems.append(f"labels outside 0..{k - 1}")
    else:
        counts = np.bincount(cs.labels, minlength=k)
        n_train = np.bincount(frames.labels[frames.split_ids("train")], minlength=k)
        if ipc == ALL_CLIPS:  # every training clip: exactly the class sizes, whatever they are
            ipc = int(n_train.max(initial=0))
            if (counts != n_train).any():
                problems.append(f"IPC 0 means every training clip, but classes "
                                f"{np.flatnonzero(counts != n_train).tolist()} hold another number of clips")
        need = np.minimum(ipc, n_train)
        if (counts > ipc).any():
            problems.append(f"more than IPC={ipc} clips in classes {np.flatnonzero(counts > ipc).tolist()}")
        if (counts < need).any():
            bad = np.flatnonzero(counts < need).tolist()
            problems.append(f"fewer than IPC={ipc} clips in classes {bad} although they have enough training videos")
        short = np.flatnonzero(counts < ipc).tolist()
        if short and not problems:
            log.warning("classes %s have fewer than IPC=%d clips (fewer training videos than IPC)", short, ipc)
    if cs.clips.shape[1] != t_c:
        problems.append(f"clips have {cs.clips.shape[1]} frames, the temporal setting says T_c={t_c}")
    hw = tuple(cs.clips.shape[2:4])
    allowed = {tuple(frames.frame_shape[:2]), (ctx.input_size, ctx.input_size)}
    if hw not in allowed:
        problems.append(f"clip size {hw} is neither the storage size {frames.frame_shape[:2]} nor the input size")
    if cs.clips.dtype != np.uint8 and not np.isfinite(cs.clips).all():
        problems.append("clips contain NaN or inf")
    src = np.asarray(cs.source_video)
    if src.shape != (n,):
        problems.append(f"source_video has shape {src.shape}, expected ({n},)")
    else:
        real = src >= 0
        train = frames.split == 0
        if (src >= len(frames.labels)).any() or not train[src[real]].all():
            problems.append("source_video names ids that are not training videos of the frames file")
        elif (frames.labels[src[real]] != cs.labels[real]).any():
            problems.append("source_video of some clips belongs to another class than the clip's label")
    if cs.source_frames is not None and np.asarray(cs.source_frames).shape != (n, t_c):
        problems.append(f"source_frames has shape {np.asarray(cs.source_frames).shape}, expected ({n}, {t_c})")
    if cs.label_logits is not None:
        ll = np.asarray(cs.label_logits)
        if ll.shape != (n, k) or not np.isfinite(ll).all():
            problems.append(f"label_logits must be finite [{n}, {k}], got {ll.shape}")
    if problems:
        raise ValueError(f"condensation method '{name}' returned an invalid set for {ctx.frames_path}:\n  "
                         + "\n  ".join(problems))


# ------------------------------------------------------------------------------------------ CLI

def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        arch, sep, p = item.partition("=")
        if not sep or not arch or not p:
            raise SystemExit(f"{flag} expects ARCH=PATH, got '{item}'")
        out[arch] = p
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", required=True, help="frames HDF5 of the dataset")
    p.add_argument("--out", required=True, help="condensed-set HDF5 to write")
    p.add_argument("--teacher", action="append", metavar="ARCH=PATH", help="trained network (repeatable)")
    p.add_argument("--experts", help="expert trajectories HDF5 (DATM)")
    p.add_argument("--stats", action="append", metavar="ARCH=PATH", help="EDC statistics file (repeatable)")
    p.add_argument("--init", help="a condensed set to initialise from (EDC init: rded)")
    p.add_argument("--workdir-job", help="checkpoint folder of this job (default: <workdir>/condense/<job>, "
                                         "vdc.resume.job_dir)")
    add_settings_arguments(p)
    g = p.add_argument_group("with --config: the job's wildcards")
    g.add_argument("--method")
    g.add_argument("--ipc", type=int)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--temporal", help="temporal tag (default: the method's)")


def main(args: argparse.Namespace) -> int:
    wc = {}
    if args.config:
        if not args.method or not args.ipc:
            raise SystemExit("--config needs --method and --ipc (and optionally --seed, --temporal)")
        wc = {"method": args.method, "ipc": args.ipc, "seed": args.seed}
        if args.temporal:
            wc["temporal"] = args.temporal
    settings = resolve_settings(args, "condense", **wc)
    run_condense(args.frames, args.out, settings, teacher_paths=_pairs(args.teacher, "--teacher"),
                 experts_path=args.experts, stats_paths=_pairs(args.stats, "--stats"), init_path=args.init,
                 workdir=args.workdir_job)
    return 0
