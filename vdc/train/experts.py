"""Expert trajectories for DATM: one job per expert, then an index of them.

    python -m vdc experts --frames H5 --out results/experts/<ds>/expert_<i>.h5 --expert I --settings JSON
    python -m vdc experts --index expert_0.h5 ... --out results/experts/<ds>/experts.h5 --settings JSON
    python -m vdc experts --frames H5 --out results/experts/<ds>/experts.h5 --settings JSON   # all, by hand

Expert i (``experts.arch``, MiniC3D-IN by default) is a network trained on the real training clips
from its own initialisation; its parameters are recorded after initialisation and after every epoch,
and its file keeps epochs 0..keep_epochs (DATM's start window reads no later ones: keep_epochs =
max_start_epoch + expert_epochs) and the last epoch (DATM's labels and initial clips come from the
fully trained expert). Each expert is one job (the workflow's rule ``experts``, one GPU each: 20
experts = 20 GPUs or SLURM jobs); a CPU job (rule ``experts_index``) then writes the index DATM reads.
File layouts: vdc/formats/experts.py.

Recipes (``experts.recipe``; the explicit keys lr / momentum / weight_decay / grad_clip / augment /
warmup_epochs / milestones override, null = the recipe's):

=========  =====  ========  ======  =========  ===========================  ============================
recipe     lr     momentum  wd      grad clip  augmentation                 schedule (per epoch)
=========  =====  ========  ======  =========  ===========================  ============================
authors    0.02   0.9       1e-4    40         random resized crop          LinearLR x0.1 -> x1 over 10
                                               (0.08-1) + flip              epochs, then x0.1 at epochs
                                                                            90 and 130 (never reached in
                                                                            50 epochs)
mtt        0.01   0         0       none       none: centre crop            constant
=========  =====  ========  ======  =========  ===========================  ============================

``authors`` is the study's authors' expert script, MCG-NJU/Video-DC ``rded/squeeze.py`` 121-174:
SGD(lr 0.02, momentum 0.9, weight decay 1e-4) (line 129), ChainedScheduler(LinearLR(start_factor 0.1,
end_factor 1, total_iters 10), MultiStepLR([90, 130], gamma 0.1)) (130-132) stepped once per epoch
(158), gradient-norm clipping at 40 (155), RandomResizedCrop + RandomHorizontalFlip (107-111), batch 16
reshuffled every epoch (118), 20 experts (121) of 150 // 3 = 50 epochs (128, 147), parameters recorded
at initialisation and after every epoch (146, 174). ``mtt`` is MTT / DATM ``buffer.py``'s plain SGD.
The learning rate of epoch e (0-based) is therefore

    lr_e = lr * (s + (1 - s) * min(1, e / warmup_epochs)) * gamma ** #{m in milestones : e >= m},   s = 0.1

(LinearLR's closed form; warmup_epochs 0 = no warm-up). Expert i (seed s_i = experts.seed * 100003 + i)
is initialised after ``torch.manual_seed(s_i)`` and draws its data order, windows, crops and flips from a
generator seeded with s_i: one random clip_len-frame clip per video per epoch in a fresh random order
(``vdc.train.loop.train_views``, with augmentation or the centre crop; flips follow the dataset's
flip mode ``datasets.<name>.hflip``: never when off, and with a label map a mirrored clip of a paired
class is trained on the paired class), cross-entropy, batch ``experts.batch``. On CUDA the forward
runs under the fast paths of ``settings["performance"]`` (vdc/accel.py: bf16 autocast,
channels_last_3d, fused SGD); on the CPU none.
The loss is summed on the device and read once per epoch (no host sync inside an epoch); a NaN or
infinite epoch loss stops the job (NonFiniteError), nothing is written. After the last epoch the test
top-1 (one centre clip x centre crop per test video, ``vdc.train.loop.test_accuracy``) is recorded.

An expert's result depends on the settings, the frames file, the code and its index i only: the job of
expert i receives the experts section without ``num_experts`` (adding experts reruns none of the
existing ones), and its identity (vdc/resume.py) is those settings plus i.

Resume (vdc/resume.py): the job of expert i checkpoints to ``<workdir>/experts/<job>/expert.pt`` (job
folder named after its expert file) after every epoch: model, optimiser, the data generator's and the
global RNG's states (dropout draws from the latter) and the snapshots so far, tied to the settings, the
frames file's contents and the code. A rerun resumes from the last epoch and ends bit-identical on the
CPU; the checkpoint is removed once the expert file is written. An expert file whose recorded identity
equals the job's is reused (so the all-in-one command skips finished experts).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vdc.accel import Accel, setup_backends
from vdc.cli import add_settings_arguments, resolve_settings
from vdc.data import clips as C
from vdc.data.frames import Frames, VideoBank, load_bank
from vdc.errors import ConfigError, InputError, NonFiniteError
from vdc.fingerprint import job_code
from vdc.formats.experts import ExpertRecord, expert_path, read_expert_attrs, stored_epochs, write_expert, write_index
from vdc.models import create_model
from vdc.progress import Progress
from vdc.resume import Checkpoint, job_dir, job_identity, rng_state, set_rng_state
from vdc.train import loop
from vdc.utils import get_device, seed_everything

log = logging.getLogger("vdc.experts")

RECIPES = {
    "authors": {"lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "grad_clip": 40.0, "augment": True,
                "warmup_epochs": 10, "milestones": [90, 130], "warmup_start_factor": 0.1, "gamma": 0.1},
    "mtt": {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "grad_clip": 0.0, "augment": False,
            "warmup_epochs": 0, "milestones": [], "warmup_start_factor": 0.1, "gamma": 0.1},
}
OVERRIDES = ("lr", "momentum", "weight_decay", "grad_clip", "augment", "warmup_epochs", "milestones")
TEST_BATCH = 64


def resolve_recipe(ex: dict) -> dict:
    """The recipe's hyperparameters with the experts section's explicit (non-null) keys taken over them."""
    r = dict(RECIPES[ex["recipe"]])
    for k in OVERRIDES:
        if ex[k] is not None:
            r[k] = ex[k]
    r["batch"] = int(ex["batch"])
    return r


def lr_at_epoch(rec: dict, epoch: int) -> float:
    """The learning rate of (0-based) ``epoch``: linear warm-up x warmup_start_factor -> x1 over
    warmup_epochs, then x gamma at each milestone (module docstring; Video-DC ``rded/squeeze.py`` 130-132)."""
    s, warm = rec["warmup_start_factor"], rec["warmup_epochs"]
    w = s + (1 - s) * min(1.0, epoch / warm) if warm > 0 else 1.0
    return rec["lr"] * w * rec["gamma"] ** sum(epoch >= m for m in rec["milestones"])


def keep_epochs(ex: dict) -> int:
    """Snapshots kept: 0..keep_epochs (null: every epoch), never more than were trained."""
    k = ex["keep_epochs"]
    return int(ex["epochs"]) if k is None else min(int(k), int(ex["epochs"]))


def expert_seed(ex: dict, i: int) -> int:
    return int(ex["seed"]) * 100003 + i


def expert_settings(settings: dict, i: int) -> dict:
    """The settings expert ``i``'s result depends on: the stage's without ``experts.num_experts``, plus i."""
    return {**settings, "experts": {k: v for k, v in settings["experts"].items() if k != "num_experts"},
            "expert": int(i)}


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    """All parameters, flattened and concatenated in named_parameters() order (float32, CPU)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float().cpu()


# ----------------------------------------------------------------------------- one expert

def train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, train: VideoBank, dataset: dict, rec: dict,
                hflip: C.HFlip, gen: torch.Generator, accel: Accel, progress: Progress) -> torch.Tensor:
    """One pass over the training videos in a fresh random order, flips as ``hflip`` (the dataset's flip
    mode; a mirrored clip of a paired class takes the paired label); returns the mean training loss as a
    0-d tensor on the device (summed there: no host sync inside the epoch)."""
    n = len(train)
    perm = torch.randperm(n, generator=gen).to(train.labels.device)
    total = torch.zeros((), device=train.labels.device)
    for s in range(0, n, rec["batch"]):
        videos = perm[s:s + rec["batch"]]
        x, y = loop.train_views(train, videos, dataset, gen, hflip, augment=rec["augment"])
        with accel.autocast():
            logits = model(accel.input(x)).float()
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if rec["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), rec["grad_clip"])
        opt.step()
        total += loss.detach() * len(videos)
        progress.update()
    return total / max(n, 1)


def train_one_expert(i: int, train: VideoBank, test: loop.TestClips, hflip: C.HFlip, num_classes: int,
                     settings: dict, ckpt: Checkpoint, device: torch.device, accel: Accel) -> dict:
    """Train expert ``i`` (resuming from ``ckpt``); returns {snapshots [S] of [P] at epochs
    ``stored_epochs``, train_loss, lr, test_top1, seed, epoch, done}."""
    ex, ds = settings["experts"], settings["dataset"]
    rec, epochs, keep, seed = resolve_recipe(ex), int(ex["epochs"]), keep_epochs(ex), expert_seed(ex, i)
    store = set(stored_epochs(epochs, keep))
    where = f"experts {ds['name']} (expert {i})"

    # initialisation
    torch.manual_seed(seed)
    model = accel.prepare(create_model(settings["arch"], num_classes, **settings["model"]).to(device))
    opt = accel.sgd(model.parameters(), lr=rec["lr"], momentum=rec["momentum"], weight_decay=rec["weight_decay"])
    gen = torch.Generator().manual_seed(seed)
    state = {"epoch": 0, "snapshots": [flat_params(model)], "train_loss": [], "lr": [], "done": False, "seed": seed}

    # resume
    saved = ckpt.load()
    if saved is not None:
        state = saved["state"]
        if state["done"]:
            log.info("expert %d: finished earlier (%s)", i, ckpt.path)
            return state
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        set_rng_state(saved["rng"], gen)
        log.info("expert %d: resuming after epoch %d (%s)", i, state["epoch"], ckpt.path)

    # train
    iters = math.ceil(len(train) / rec["batch"])
    progress = Progress(epochs * iters, f"expert {i} ({settings['arch']})", log, unit="step",
                        initial=state["epoch"] * iters)
    model.train()
    for epoch in range(state["epoch"], epochs):
        lr = lr_at_epoch(rec, epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = float(train_epoch(model, opt, train, ds, rec, hflip, gen, accel, progress))  # one host sync per epoch
        if not math.isfinite(loss):
            raise NonFiniteError(f"{where}: the training loss is {loss} in epoch {epoch}; nothing was written. "
                                 f"Lower experts.lr (or set experts.grad_clip) and rerun")
        state["train_loss"].append(loss)
        state["lr"].append(lr)
        state["epoch"] = epoch + 1
        if epoch + 1 in store:
            state["snapshots"].append(flat_params(model))
        if epoch + 1 == epochs:
            state["test_top1"] = loop.test_accuracy(model, test, batch=TEST_BATCH, accel=accel)["top1"]
            state["done"] = True
        progress.update(0, milestone=True, epoch=epoch + 1, lr=lr, loss=loss)
        ckpt.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(gen), "state": state})
    progress.close()
    log.info("expert %d: %d epochs, last train loss %.4f, test top1 %.2f", i, epochs,
             state["train_loss"][-1], state["test_top1"])
    return state


# ----------------------------------------------------------------------------- jobs

class _Data:
    """What every expert of a dataset trains and tests on, loaded once per process."""

    def __init__(self, frames_path, settings: dict, device):
        ds = settings["dataset"]
        frames = Frames(frames_path)
        self.train = load_bank(frames, "train", device, dataset=ds)
        self.test = loop.TestClips(load_bank(frames, "test", device, dataset=ds), ds)
        if len(self.train) == 0:
            raise InputError(f"{frames_path}: no training videos; check the annotations of dataset {ds['name']} "
                             f"and rerun extract")
        self.num_classes = frames.num_classes
        self.hflip = C.HFlip.of(ds, frames.classes)
        self.frames_path = frames_path


def _setup(settings: dict) -> tuple[torch.device, Accel]:
    ex = settings["experts"]
    seed_everything(int(ex["seed"]), settings["deterministic"])
    device = get_device(settings["device"])
    return device, setup_backends(settings, device)


def _identity(settings: dict, i: int, frames_path) -> dict:
    return job_identity(expert_settings(settings, i), {"frames": frames_path}, job_code("experts", settings))


def _done_earlier(out_path, identity: dict) -> bool:
    """True when ``out_path`` is an expert file written by a job of this identity."""
    if not Path(out_path).exists():
        return False
    try:
        return read_expert_attrs(out_path).get("identity") == json.dumps(identity, sort_keys=True, default=str)
    except InputError:
        return False


def _run_expert(i: int, data: _Data, out_path, settings: dict, device, accel: Accel, workdir=None) -> dict:
    """Train expert ``i`` unless its file is already this job's output; write its file. Returns its attrs."""
    identity = _identity(settings, i, data.frames_path)
    if _done_earlier(out_path, identity):
        log.info("expert %d: %s is this job's output already", i, out_path)
        return read_expert_attrs(out_path)
    ckpt = Checkpoint(Path(workdir or job_dir(settings["workdir"], "experts", out_path)) / "expert.pt", identity, log)
    state = train_one_expert(i, data.train, data.test, data.hflip, data.num_classes, settings, ckpt, device, accel)
    ex, ds = settings["experts"], settings["dataset"]
    dtype = np.float16 if ex["dtype"] == "float16" else np.float32
    record = ExpertRecord(params=torch.stack(state["snapshots"]).numpy().astype(dtype),
                          epochs=stored_epochs(int(ex["epochs"]), keep_epochs(ex)), test_top1=float(state["test_top1"]),
                          index=i, seed=int(state["seed"]), train_loss=state["train_loss"], lr=state["lr"])
    attrs = {"arch": settings["arch"], "model": json.dumps(settings["model"], sort_keys=True),
             "num_classes": data.num_classes, "epochs": int(ex["epochs"]), "keep_epochs": keep_epochs(ex),
             "recipe": json.dumps(resolve_recipe(ex), sort_keys=True), "dtype": np.dtype(dtype).name,
             "input_size": int(ds["input_size"]), "clip_len": int(ds["clip_len"]),
             "clip_interval": int(ds["clip_interval"]), "dataset": ds["name"], "frames_file": str(data.frames_path),
             "settings": json.dumps(expert_settings(settings, i), sort_keys=True),
             "identity": json.dumps(identity, sort_keys=True, default=str)}
    write_expert(out_path, record, create_model(settings["arch"], data.num_classes, **settings["model"]), attrs)
    ckpt.remove()
    return read_expert_attrs(out_path)


def train_expert(frames_path, out_path, settings: dict, index: int, workdir=None) -> dict:
    """The job of expert ``index``: train it and write its expert file ``out_path``. ``workdir``: the
    checkpoint folder (default ``job_dir(settings["workdir"], "experts", out_path)``). Returns a summary."""
    t0 = time.time()
    device, accel = _setup(settings)
    data = _Data(frames_path, settings, device)
    log.info("expert %d of %s on %s: %d train / %d test videos, recipe %s, device %s", index, settings["arch"],
             settings["dataset"]["name"], len(data.train), len(data.test),
             json.dumps(resolve_recipe(settings["experts"]), sort_keys=True), device)
    attrs = _run_expert(index, data, out_path, settings, device, accel, workdir)
    log.info("expert %d in %.1f s; test top1 %.2f", index, time.time() - t0, attrs["test_top1"])
    return {"expert": index, "test_top1": attrs["test_top1"], "wall_time_s": time.time() - t0}


def index_experts(expert_files: list, out_path, settings: dict) -> dict:
    """The index job: write the experts index ``out_path`` of ``expert_files`` (one per expert of the
    settings' experts section). Returns the index's attributes."""
    n = int(settings["experts"]["num_experts"])
    if len(expert_files) != n:
        raise ConfigError(f"experts index {out_path}: {len(expert_files)} expert files given, experts.num_experts "
                          f"is {n}")
    attrs = write_index(out_path, expert_files)
    log.info("indexed %d experts in %s", n, out_path)
    return attrs


def train_experts(frames_path, out_path, settings: dict) -> dict:
    """Every expert in this process, one after the other (by hand; the workflow runs one job per expert):
    expert i's file next to ``out_path`` (``vdc.formats.experts.expert_path``), then the index ``out_path``.
    Checkpoints and finished files are those of the per-expert jobs, so either way resumes the other."""
    t0 = time.time()
    device, accel = _setup(settings)
    data = _Data(frames_path, settings, device)
    n = int(settings["experts"]["num_experts"])
    log.info("%d experts %s on %s: %d train / %d test videos, recipe %s, device %s", n, settings["arch"],
             settings["dataset"]["name"], len(data.train), len(data.test),
             json.dumps(resolve_recipe(settings["experts"]), sort_keys=True), device)
    files = [expert_path(out_path, i) for i in range(n)]
    accs = [_run_expert(i, data, f, settings, device, accel)["test_top1"] for i, f in enumerate(files)]
    index_experts(files, out_path, settings)
    log.info("%d experts in %.1f s; test top1 %s", n, time.time() - t0, ", ".join(f"{a:.1f}" for a in accs))
    return {"test_top1": accs, "wall_time_s": time.time() - t0, "keep_epochs": keep_epochs(settings["experts"])}


# ----------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frames", help="frames HDF5 of the dataset (not with --index)")
    p.add_argument("--out", required=True, help="the expert file to write (--expert), else the experts index")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--expert", type=int, help="train this expert only (0-based) and write its file")
    g.add_argument("--index", nargs="+", metavar="EXPERT_H5", help="write the index of these expert files")
    add_settings_arguments(p)


def main(args: argparse.Namespace) -> int:
    settings = resolve_settings(args, "experts")
    if args.index:
        attrs = index_experts(args.index, args.out, settings)
        print(json.dumps({"num_experts": int(attrs["num_experts"]), "content_id": attrs["content_id"]}))
        return 0
    if not args.frames:
        raise ConfigError("python -m vdc experts: --frames is required (except with --index)")
    if args.expert is not None:
        summary = train_expert(args.frames, args.out, settings, args.expert)
    else:
        summary = train_experts(args.frames, args.out, settings)
    print(json.dumps(summary))
    return 0
