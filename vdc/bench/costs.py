"""``python -m vdc.bench costs``: measure, on this device, the per-step costs a config's plan needs.

    python -m vdc.bench costs --configfile configs/ucf101.yaml --out benchmarks/vdc-costs.json
    python -m vdc.bench costs --studies configs/*.yaml --list-ops ops.json     # what to measure (needs Snakemake)
    python -m vdc.bench costs --ops ops.json --out costs.json                   # measure it (e.g. on a GPU machine)

It asks the plan (vdc/plan.py: Snakemake's DAG, the dataset sizes, the operations of every job) which
operations the study runs and measures each group (op, arch, width, frames, size) at up to four of
the batch sizes the jobs use (all of them when there are at most four, else the smallest, the largest
and the two that occur most often; the plan interpolates between them):

* ``train``   - one training step as the teacher / experts / evaluation run it: a batch of random
                uint8 videos at the dataset's storage size in a device bank, the clip view
                (``loop.train_batch``: window, random resized crop + flip, normalise), forward under
                the job's autocast, cross-entropy, backward, the optimiser step (vdc's AdamW; the
                teacher's and experts' SGD costs about the same);
* ``forward`` - a no-grad forward of a ready batch in eval mode (test passes, labelers, features);
* ``edc``     - one EDC iteration on one network (``vdc.bench.edc.measure_step``);
* ``datm``    - one DATM outer iteration at the job's syn_steps and batch_syn (``vdc.bench.datm.run_case``);
* ``startup`` - a fresh ``python`` importing vdc's stages and touching the device;
* ``load``    - bytes/s of reading a frames HDF5 split into a device bank;
* ``toy_video`` / ``extract_video`` - generating and decoding toy videos (only for configs with toy data).

Timing: median of ``--steps`` runs after ``--warmup`` (CUDA synchronised). Memory (``peak_bytes``): on
CUDA ``torch.cuda.max_memory_allocated`` during the step above what was allocated before it; on the CPU
an estimate: the bytes autograd saves for backward plus gradients and optimiser moments (3 x the
parameters). The fast paths are the config's ``performance`` section on this device (vdc/accel.py).
Output: the bench file (format ``vdc-costs-1``) that ``python -m vdc plan --bench FILE`` reads.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vdc.accel import Accel, setup_backends
from vdc.bench.timing import SavedBytes, sync, timed
from vdc.utils import get_device, set_threads, write_json


def timed_peak(fn, steps: int, warmup: int, device) -> tuple[float, float | None]:
    """(median seconds of fn() over ``steps`` runs after ``warmup`` (:func:`vdc.bench.timing.timed`), CUDA peak
    bytes of the timed runs above what was allocated before them, or None)."""
    base = []

    def reset():
        torch.cuda.reset_peak_memory_stats()
        base.append(torch.cuda.memory_allocated())

    seconds = timed(fn, steps, device, warmup, before=reset if device.type == "cuda" else None)
    return seconds, (torch.cuda.max_memory_allocated() - base[0] if base else None)


def random_bank(n: int, frames: int, storage, classes: int, device):
    """A VideoBank of n random uint8 videos of ``frames`` frames at storage [H, W]."""
    from vdc.data.frames import VideoBank

    h, w = storage
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (n * frames, h, w, 3), generator=g, dtype=torch.uint8).to(device)
    return VideoBank(frames=data, offsets=torch.arange(n, device=device) * frames,
                     lengths=torch.full((n,), frames, device=device), labels=torch.arange(n, device=device) % classes,
                     ids=torch.arange(n))


def measure_train(key: dict, batch: int, storage, classes: int, clip_interval: int, accel: Accel, steps: int,
                  warmup: int) -> dict:
    """One training step (view + forward + CE + backward + AdamW) of ``key``'s network at ``batch``."""
    from vdc.models import create_model
    from vdc.train import loop

    dev = accel.device
    torch.manual_seed(0)
    model = accel.prepare(create_model(key["arch"], classes, width=key["width"]).to(dev)).train()
    opt = accel.adamw(loop.decay_groups(model, 0.01), lr=1e-3)
    n_frames = key["frames"] * clip_interval
    bank = random_bank(batch, n_frames, storage, classes, dev)
    ds = {"clip_len": key["frames"], "clip_interval": clip_interval, "input_size": key["size"]}
    gen = torch.Generator().manual_seed(0)
    videos = torch.arange(batch, device=dev)

    def step():
        x = accel.input(loop.train_batch(bank, videos, ds, gen))
        with accel.autocast():
            logits = model(x).float()
        loss = F.cross_entropy(logits, bank.labels[videos])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    seconds, peak = timed_peak(step, steps, warmup, dev)
    if peak is None:  # CPU: activations saved for backward + gradients and two moments
        with SavedBytes() as saved:
            x = loop.train_batch(bank, videos, ds, gen)
            F.cross_entropy(model(x), bank.labels[videos])  # counted as autograd saves it: no backward needed
        peak = saved.total + 3 * 4 * sum(p.numel() for p in model.parameters())
    return {"seconds": seconds, "peak_bytes": peak, "storage": list(storage)}


def measure_forward(key: dict, batch: int, classes: int, accel: Accel, steps: int, warmup: int) -> dict:
    from vdc.models import create_model

    dev = accel.device
    torch.manual_seed(0)
    model = accel.prepare(create_model(key["arch"], classes, width=key["width"]).to(dev)).eval()
    x = accel.input(torch.randn(batch, 3, key["frames"], key["size"], key["size"], device=dev))

    @torch.no_grad()
    def fwd():
        with accel.autocast():
            model(x).float()

    seconds, peak = timed_peak(fwd, steps, warmup, dev)
    return {"seconds": seconds, "peak_bytes": peak}


def measure_startup(device, repeats: int = 2) -> float:
    """Seconds for a fresh interpreter to import vdc's stages and touch the device."""
    code = ("import torch, vdc.evaluate, vdc.train.teacher, vdc.condense.stage; "
            f"torch.zeros(1, device='{device.type}')")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return min(times)


def measure_load(device, mib: int = 64) -> float:
    """Bytes/s of reading a frames HDF5 split into a device bank (a file of ``mib`` MiB, read once warm)."""
    from vdc.data.frames import Frames, load_bank, write_frames

    rng = np.random.default_rng(0)
    n = max(1, mib * 2 ** 20 // (32 * 128 * 170 * 3))
    videos = [rng.integers(0, 256, (32, 128, 170, 3), dtype=np.uint8) for _ in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "load.h5"
        write_frames(path, videos, [0] * n, [0] * n, ["c"])
        with Frames(path) as fr:
            load_bank(fr, "train", device)  # warm the page cache, as a job reading a recent file finds it
            sync(device)
            t = time.perf_counter()
            load_bank(fr, "train", device)
            sync(device)
            secs = time.perf_counter() - t
    return n * 32 * 128 * 170 * 3 / secs


def measure_toy(dataset: dict) -> tuple[float, float]:
    """(seconds to generate one toy video, frames decoded per second by extraction) for a toy dataset's
    settings, on 2 classes x 3 videos."""
    from vdc.data.extract import extract
    from vdc.data.toy import generate

    small = {**dataset["toy"], "classes": 2, "train_per_class": 2, "test_per_class": 1}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "toy"
        t = time.perf_counter()
        summary = generate(root, {"dataset": {"toy": small}}, workers=1)
        per_video = (time.perf_counter() - t) / summary["videos"]
        ds = {**dataset, "name": "bench", "toy": small, "video_root": str(root / "videos"),
              "annotations": str(root / "ucfTrainTestlist")}
        s = extract({"dataset": ds}, Path(tmp) / "f.h5", Path(tmp) / "f.tsv", workers=1)
    return per_video, s["frames"] / s["seconds"]


def _pick_batches(counter: Counter) -> list[int]:
    """Batch sizes to measure for one group: all if at most four, else min, max and the two most frequent."""
    batches = sorted(counter)
    if len(batches) <= 4:
        return batches
    frequent = [b for b, _ in counter.most_common(2)]
    return sorted({batches[0], batches[-1], *frequent})


def needed(config_files, sizes=None) -> tuple[dict, dict, list]:
    """(config, dataset facts, every job's operations) of a config, as the plan sees them."""
    from vdc.plan import dag_jobs, dataset_facts, job_ops

    cfg, jobs = dag_jobs(config_files)
    facts = {name: dataset_facts(cfg, name, sizes) for name in cfg["study"]["datasets"]}
    return cfg, facts, [job_ops(j, cfg, facts) for j in jobs]


def list_ops(studies: list[list[str]]) -> dict:
    """What to measure for one or more studies (each a list of config files merged like --configfile):
    ``{"format": "vdc-ops-1", "studies", "groups": [{op, key, batches, storage, classes, clip_interval}],
    "datm": [{key, classes}], "toy": a toy dataset's settings or None, "performance", "deterministic"}``.
    Groups are (op, arch, width, frames, size); batches per group as :func:`_pick_batches` picks them."""
    groups: dict = defaultdict(Counter)
    where: dict = {}
    datm: dict = {}
    toy, perf, det = None, None, None
    for files in studies:
        cfg, facts, jobs = needed(files)
        perf, det = perf or cfg["performance"], cfg["deterministic"] if det is None else det
        for name, ds in cfg["datasets"].items():
            if ds["format"] == "toy" and name in facts and toy is None:
                toy = ds
        for j in jobs:
            name = j.wildcards.get("dataset")
            for op in j.ops:
                # t_c (frames of a synthetic video) is not part of an edc / datm cost key (vdc/plan.py):
                # such a group is measured once, with the longest t_c any job uses
                if op.op in ("train", "forward", "edc"):
                    g = (op.op, tuple(sorted((k, v) for k, v in op.key.items() if k not in ("batch", "t_c"))))
                    groups[g][op.key["batch"]] += op.count
                    w = where.setdefault(g, {"storage": facts[name]["storage"], "classes": facts[name]["classes"],
                                             "clip_interval": cfg["datasets"][name]["clip_interval"]})
                    if "t_c" in op.key:
                        w["t_c"] = max(w.get("t_c", 0), op.key["t_c"])
                elif op.op == "datm":
                    g = tuple(sorted((k, v) for k, v in op.key.items() if k != "t_c"))
                    d = datm.setdefault(g, {"classes": facts[name]["classes"], "t_c": 0})
                    d["t_c"] = max(d["t_c"], op.key["t_c"])
    return {"format": "vdc-ops-1", "studies": studies, "performance": perf, "deterministic": bool(det),
            "groups": [{"op": op, "key": dict(items), "batches": _pick_batches(counter), **where[(op, items)]}
                       for (op, items), counter in sorted(groups.items(), key=lambda kv: str(kv[0]))],
            "datm": [{"key": dict(items), **d} for items, d in sorted(datm.items())], "toy": toy}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configfile", nargs="+", action="extend", default=[], metavar="FILE",
                   help="config file(s) of one study, merged as snakemake --configfile does (default: config.yaml)")
    p.add_argument("--studies", nargs="+", metavar="FILE", help="several studies, one config file each (instead of --configfile)")
    p.add_argument("--list-ops", metavar="FILE", help="only write what would be measured (needs Snakemake), then stop")
    p.add_argument("--ops", metavar="FILE", help="measure the operations of this --list-ops file (no Snakemake needed)")
    p.add_argument("--out", default="benchmarks/vdc-costs.json", help="the bench file to write (rewritten after every entry)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1: as the default study's jobs run)")
    p.add_argument("--steps", type=int, default=3, help="timed runs per measurement")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--skip", nargs="*", default=[], choices=["train", "forward", "edc", "datm", "startup", "load", "toy"],
                   help="operations not to measure")


def main(a: argparse.Namespace) -> int:
    from vdc.bench.datm import datm_iteration
    from vdc.bench.edc import measure_step
    from vdc.train.loop import device_name

    if a.ops:
        from vdc.errors import load_json

        ops = load_json(a.ops, "operations list", "write it with python -m vdc.bench costs --list-ops FILE")
    else:
        ops = list_ops([[f] for f in a.studies] if a.studies else [a.configfile or ["config.yaml"]])
    if a.list_ops:
        write_json(a.list_ops, ops)
        print(f"wrote {a.list_ops}: {len(ops['groups'])} groups, {len(ops['datm'])} DATM cases")
        return 0
    set_threads(a.threads)
    device = get_device(a.device)
    perf_keys = {"bf16", "channels_last_3d", "fused_optimizer", "tf32", "datm_bf16", "cpu_channels_last_3d"}
    if a.ops and perf_keys - set(ops["performance"]):
        from vdc.errors import InputError

        raise InputError(f"{a.ops}: its performance section lacks {sorted(perf_keys - set(ops['performance']))} "
                         "(written by an older vdc); rewrite it with python -m vdc.bench costs --list-ops FILE")
    # the jobs' process-wide switches (TF32, cuDNN autotuning unless deterministic) and their Accel
    accel = setup_backends({"performance": ops["performance"], "deterministic": ops["deterministic"]}, device)
    memory = (torch.cuda.get_device_properties(device).total_memory if device.type == "cuda"
              else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    out = {"format": "vdc-costs-1", "device": device_name(device), "torch": torch.__version__, "device_memory_bytes": memory,
           "created": datetime.datetime.now().isoformat(timespec="seconds"), "host": platform.node(),
           "source": f"python -m vdc.bench costs for {' | '.join(' + '.join(s) for s in ops['studies'])} "
                     f"({accel.describe()})", "studies": ops["studies"], "entries": []}
    t0 = time.time()

    def add(entry: dict, msg: str) -> None:
        out["entries"].append(entry)
        write_json(a.out, out)  # after every entry: a run cut short keeps what it measured
        print(f"[{time.time() - t0:6.1f} s] {msg}", flush=True)

    for g in ops["groups"]:
        op, key = g["op"], g["key"]
        if op in a.skip:
            continue
        for b in g["batches"]:
            if op == "train":
                r = measure_train(key, b, g["storage"], g["classes"], g["clip_interval"], accel, a.steps, a.warmup)
            elif op == "forward":
                r = measure_forward(key, b, g["classes"], accel, a.steps, a.warmup)
            else:
                r = measure_step(key["arch"], key["width"], g["classes"], key["size"], key["frames"], g["t_c"], b,
                                 accel, a.steps, a.warmup)
            add({"op": op, **key, "batch": b, **r},
                f"{op:<8} {key['arch']:<13} width {key['width']:<6g} {key['frames']}x{key['size']}^2 batch {b:<4} "
                f"{r['seconds'] * 1e3:9.2f} ms" + (f", peak {r['peak_bytes'] / 2**20:.0f} MiB" if r.get("peak_bytes") else ""))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if "datm" not in a.skip:
        for d in ops["datm"]:
            key = d["key"]
            r = datm_iteration(key["arch"], key["width"], d["classes"], key["size"], key["frames"], key["batch_syn"],
                               key["syn_steps"], key["memory"], accel.for_datm(), max(1, a.steps - 1))
            add({"op": "datm", **key, "t_c": d["t_c"], "seconds": r["time_s"], "peak_bytes": r["peak_bytes"]},
                f"datm     {key['syn_steps']} steps x {key['batch_syn']} clips ({key['memory']}): {r['time_s']:.3f} s/iteration")
    if "startup" not in a.skip:
        secs = measure_startup(device)
        add({"op": "startup", "seconds": secs}, f"startup  {secs:.2f} s")
    if "load" not in a.skip:
        rate = measure_load(device)
        add({"op": "load", "bytes_per_s": rate}, f"load     {rate / 1e6:.0f} MB/s")
    if ops["toy"] and "toy" not in a.skip:
        per_video, fps = measure_toy(ops["toy"])
        add({"op": "toy_video", "seconds": per_video}, f"toy      {per_video:.3f} s per generated video")
        add({"op": "extract_video", "frames_per_s": fps}, f"extract  {fps:.0f} frames/s")
    print(f"wrote {a.out}: {len(out['entries'])} entries in {time.time() - t0:.0f} s; plan with: "
          f"python -m vdc plan --configfile CONFIG --bench {a.out}")
    return 0
