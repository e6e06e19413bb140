"""``python -m vdc plan``: what a study will cost before it runs — jobs, device-hours and peak memory per rule.

    python -m vdc plan --configfile configs/ucf101.yaml [--bench FILE] [--compare benchmarks] [--json OUT]

1. **Jobs** come from Snakemake's own DAG: a dry run of the repository's Snakefile with ``--forceall``
   (every job of the study, as a fresh run would execute it), in a scratch working directory. Real
   datasets' annotation files need not exist on this machine: the dry run reads a copy of the config
   whose annotation paths point at empty placeholder files of the same names (the DAG never reads
   them). Each job's rule and wildcards are parsed from the dry run's job blocks and checked against
   its "Job stats" table.
2. **Steps per job** follow from the job's settings (``vdc.config.stage_settings``, what the job
   itself receives) and the dataset's size (:func:`dataset_facts`). Per job, a list of operations
   with counts (:func:`job_ops`) — N = training videos, M = test videos, K = classes, B = batch:

   ============  ==========================================================================================
   rule          operations
   ============  ==========================================================================================
   teacher       epochs x ceil(N/B) ``train`` steps; ceil(epochs/eval_every) (+1) test passes of M clips
                 (``forward`` at batch 2B)
   experts       per expert (all of them, or the job's own ``expert`` wildcard): epochs x ceil(N/B)
                 ``train`` steps of experts.arch + one test pass (batch 64)
   stats         one ``forward`` pass over the N training videos (batch 64)
   condense      random: nothing; full: nothing; herding: ``forward`` over N (batch); rded: ``forward``
                 over K x min(mipc, N/K) x clips_per_video candidates (batch); edc: ceil(IPC K / batch)
                 chunks x iterations ``edc`` steps, networks in rotation; datm: iterations x one ``datm``
                 iteration (syn_steps inner steps of batch_syn clips) + the experts' ``forward`` over
                 K x min(init_candidates, N/K) candidates per expert
   evaluate      epochs x (N_c // B ``train`` steps at B + one at N_c mod B), N_c = IPC x K (all N for
                 ``full``), B = base_batch x IPC, plus the labeler's ``forward`` on every step (Multi-SL)
                 or once over N_c (soft); one test pass of M clips per late epoch (+ every test_every)
   extract       host: N + M videos x (source frames / decoding rate) / threads
   toy_dataset   host: videos x generation time per video
   ============  ==========================================================================================

   Every job also pays ``startup`` (interpreter, imports, device init) and ``load`` (its frames
   bank: train split, test split or both, uint8, at the measured bytes/s) — or, for a split larger than
   the bank limit (``bank_gb``, else 90 % of the bench file's device memory), one HDF5 clip read per clip
   it draws (``clip_read``), as the streamed bank does.
3. **Per-step costs** come from a bench file (``python -m vdc.bench costs --configfile ... --out FILE``
   measures exactly the operations a config needs, on the current device). An entry is keyed by
   op, arch, width, frames and size (+ syn_steps / batch_syn / memory mode for datm);
   other batch sizes are interpolated linearly between the two nearest measured ones (proportionally
   from a single one), other clip lengths scale linearly from the nearest measured one (3-D networks),
   DATM iterations scale linearly in syn_steps and batch_syn. An operation with
   no entry costs nothing and is listed under "missing" (the estimate is then a lower bound, "≥").
   Without ``--bench``: ``benchmarks/vdc-costs.json`` when it exists, else the built-in H200 figures
   of ``vdc/bench/anchors.py`` (gpu-anchors.md, not measured by vdc; labelled so in the output).
4. **Device-hours** = the sum of the device jobs' seconds (one GPU per job); **peak memory** of a job =
   its resident data (frames bank, test clips) + the model's parameters + the largest measured step
   peak among its operations (CUDA: ``max_memory_allocated``; CPU bench files: an activation estimate).
   An ``edc`` or ``datm`` entry's peak is the whole computation's (synthetic set, optimiser state,
   network, activations), so EDC and DATM jobs add only the frames bank DATM keeps for its initialisation.
   Every other rule's jobs (toy_dataset, extract, tables, reports) run on the host and are listed
   separately (host-h: start-up plus their modelled work; rules without a model: start-up only).

``--compare DIR`` adds the measured seconds of a finished run (Snakemake's ``benchmarks/`` TSVs) next to
the estimate, per rule and in total.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vdc.config import (PATHS, ConfigError, deep_merge, load_config, method_settings, read_config_file, section,
                        stage_settings)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BENCH = Path("benchmarks/vdc-costs.json")
GIB = 2 ** 30

# rule -> the stage whose settings its jobs receive (workflow/rules/*.smk)
RULE_STAGE = {"toy_dataset": "toy", "extract": "extract", "teacher": "teacher", "experts": "experts",
              "stats": "stats", "condense": "condense", "evaluate": "evaluate", "tables": "tables"}
DEVICE_RULES = {"teacher", "experts", "stats", "condense", "evaluate"}  # the rules that declare a GPU

# Dataset sizes when no frames file exists yet (study.md section 2, split 1). source_frames: mean frames
# per source video, approximate (UCF101 from study.md: 13,320 videos x 187 frames; the others typical).
PAPER_DATASETS = {
    "ucf101": {"classes": 101, "train": 9537, "test": 3783, "source_frames": 187},
    "hmdb51": {"classes": 51, "train": 3570, "test": 1530, "source_frames": 97},
    "ssv2": {"classes": 174, "train": 168913, "test": 24777, "source_frames": 45},
    "k400": {"classes": 400, "train": 240436, "test": 19800, "source_frames": 250},
}
DECODE_FPS = 1500.0  # frames/s one extraction worker decodes at 320x240 (machine.md: decord 950-2,600)


# ============================================================================ the DAG

@dataclass
class Job:
    rule: str
    wildcards: dict
    runs: bool = False  # the job runs a command (its block names a log file); target rules such as all do not


def _standalone_config(config_files: list[str], overrides: dict | None, scratch: Path) -> tuple[dict, Path]:
    """The validated config of ``config_files`` (+ overrides), and a standalone copy of it for the dry run
    in which every non-toy dataset's annotations point at empty placeholder files (same names)."""
    from vdc.data.ingest import annotation_files

    cfg = load_config(*config_files, overrides=overrides)
    raw: dict = {}
    for p in config_files:
        raw = deep_merge(raw, read_config_file(p))
    raw = deep_merge(raw, overrides or {})
    for name, ds in cfg["datasets"].items():
        if ds["format"] == "toy":
            continue
        fake = scratch / "annotations" / name
        raw["datasets"][name]["annotations"] = str(fake)
        raw["datasets"][name]["video_root"] = str(scratch / "videos" / name)
        for f in annotation_files({**ds, "annotations": str(fake)}):
            f = Path(f)
            if ds["format"] == "hmdb51":  # the folder itself is the input
                f.mkdir(parents=True, exist_ok=True)
            else:
                f.parent.mkdir(parents=True, exist_ok=True)
                f.touch()
    path = scratch / "plan-config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return cfg, path


_RULE_RE = re.compile(r"^(?:local)?rule (\w+):\s*$")
_STATS_RE = re.compile(r"^(\w+)\s+(\d+)\s*$")


def parse_dry_run(text: str) -> list[Job]:
    """Jobs of a Snakemake dry run's output: each ``rule X:`` block with its ``wildcards:`` line. The
    block count per rule must equal the "Job stats" table (else Snakemake's format changed)."""
    jobs, stats, current, in_stats = [], {}, None, False
    for line in text.splitlines():
        m = _RULE_RE.match(line)
        if m:
            current = Job(m.group(1), {})
            jobs.append(current)
            continue
        s = line.strip()
        if s.startswith("log:") and current is not None:
            current.runs = True
        elif s.startswith("wildcards:") and current is not None:
            for part in s[len("wildcards:"):].split(","):
                k, _, v = part.strip().partition("=")
                current.wildcards[k] = v
        elif s == "Job stats:":
            in_stats, stats = True, {}
        elif in_stats:
            m = _STATS_RE.match(s)
            if m and m.group(1) != "total":
                stats[m.group(1)] = int(m.group(2))
            elif s.startswith("total"):
                in_stats = False
        if not s:
            current = None
    seen = defaultdict(int)
    for j in jobs:
        seen[j.rule] += 1
    if dict(seen) != stats:
        raise RuntimeError(f"could not read Snakemake's dry run: job blocks {dict(seen)} vs its Job stats {stats}")
    return jobs


def dag_jobs(config_files: list[str], overrides: dict | None = None, snakefile: Path | None = None) -> tuple[dict, list[Job]]:
    """(validated config, every job of a fresh run) from Snakemake's dry run (module docstring, 1)."""
    snakefile = Path(snakefile or REPO / "Snakefile")
    if not snakefile.is_file():
        raise ConfigError(f"{snakefile}: no Snakefile; run the plan from a vdc checkout or pass --snakefile")
    with tempfile.TemporaryDirectory(prefix="vdc-plan-") as tmp:
        scratch = Path(tmp)
        cfg, path = _standalone_config(config_files, overrides, scratch)
        cmd = [sys.executable, "-m", "snakemake", "-n", "--forceall", "--snakefile", str(snakefile),
               "--configfile", str(path), "--directory", str(scratch / "run"), "--workflow-profile", "none",
               "--cores", "1"]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=scratch)
        if res.returncode != 0:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
            raise ConfigError(f"snakemake could not plan {' + '.join(config_files)}:\n{tail}")
    return cfg, parse_dry_run(res.stdout + res.stderr)


# ============================================================================ dataset facts

def dataset_facts(cfg: dict, name: str, sizes: dict | None = None) -> dict:
    """{train, test, classes, frames (mean stored frames per video), storage [H, W], source}: from
    ``sizes`` (--sizes), the dataset's frames file when it exists, the toy generator's settings, or the
    paper's dataset sizes (:data:`PAPER_DATASETS`)."""
    ds = cfg["datasets"][name]
    h, w = ds["storage_size"]
    base = {"storage": [h, w], "source_frames": None}
    if sizes and name in sizes:
        return {**base, **sizes[name], "source": "--sizes"}
    frames_path = Path(PATHS["frames"].format(results=cfg["results"], dataset=name))
    if frames_path.is_file():
        from vdc.data.frames import Frames

        with Frames(frames_path) as fr:
            tr, te = fr.split_ids("train"), fr.split_ids("test")
            return {**base, "train": len(tr), "test": len(te), "classes": fr.num_classes,
                    "frames": float(fr.stored_lengths[tr].mean()) if len(tr) else 0.0,
                    "test_frames": float(fr.stored_lengths[te].mean()) if len(te) else 0.0, "source": str(frames_path)}
    if ds["format"] == "toy":
        t = ds["toy"]
        src = (t["min_frames"] + t["max_frames"]) / 2
        n = min(ds["max_frames"] or math.inf, math.ceil(src / ds["frame_stride"]))
        return {**base, "train": t["classes"] * t["train_per_class"], "test": t["classes"] * t["test_per_class"],
                "classes": t["classes"], "frames": n, "test_frames": n, "source_frames": src,
                "source": "the toy generator's settings"}
    if ds["format"] in PAPER_DATASETS:
        p = PAPER_DATASETS[ds["format"]]
        n = min(ds["max_frames"] or math.inf, math.ceil(p["source_frames"] / ds["frame_stride"]))
        return {**base, "train": p["train"], "test": p["test"], "classes": p["classes"], "frames": n,
                "test_frames": n, "source_frames": p["source_frames"],
                "source": f"paper sizes of {ds['format']} (study.md; frames per video approximate)"}
    raise ConfigError(f"dataset '{name}': no frames file yet ({frames_path}) and format '{ds['format']}' has no "
                      f"known size; pass --sizes {name}=TRAIN,TEST,CLASSES,FRAMES_PER_VIDEO")


# ============================================================================ operations per job

@dataclass
class Op:
    """``count`` times operation ``op`` with key ``key`` (arch, width, frames, size, batch, ...)."""

    op: str
    key: dict
    count: float


@dataclass
class JobOps:
    rule: str
    wildcards: dict
    ops: list[Op] = field(default_factory=list)
    banks: list = field(default_factory=list)  # (bytes, clips read) of each frames split the job loads
    bank_limit: float | None = None  # datasets.<name>.bank_gb in bytes: a larger split is streamed
    load_bytes: float = 0.0         # other data read into device memory
    resident_bytes: float = 0.0     # data held on the device for the whole job (besides the banks)
    param_bytes: float = 0.0        # parameters of the networks on the device (float32)
    runs: bool = True               # a process is started (False for target rules such as all)


def _net(settings_models: dict, arch: str, frames: int, size: int) -> dict:
    return {"arch": arch, "width": float(settings_models[arch]["width"]), "frames": int(frames), "size": int(size)}


def _steps(op: str, n: int, batch: int, key: dict, times: float) -> list[Op]:
    """``times`` passes of operation ``op`` over n clips in batches of ``batch`` (the last one smaller)."""
    full, rem = divmod(int(n), int(batch))
    ops = [Op(op, {**key, "batch": int(batch)}, full * times)] if full else []
    if rem:
        ops.append(Op(op, {**key, "batch": rem}, times))
    return ops


def _passes(n: int, batch: int, key: dict, times: float = 1.0) -> list[Op]:
    """``times`` forward passes over n clips in batches of ``batch``."""
    return _steps("forward", n, batch, key, times)


_PARAMS: dict = {}


def _params(arch: str, width: float, classes: int) -> int:
    """Number of parameters of a network (built on the CPU once per (arch, width, classes))."""
    key = (arch, round(float(width), 6), int(classes))
    if key not in _PARAMS:
        from vdc.models import create_model

        _PARAMS[key] = sum(p.numel() for p in create_model(arch, key[2], width=key[1]).parameters())
    return _PARAMS[key]


def job_ops(job: Job, cfg: dict, facts: dict) -> JobOps:
    """The operations of one job (module docstring, 2)."""
    out = JobOps(job.rule, dict(job.wildcards), runs=job.runs)
    stage = RULE_STAGE.get(job.rule)
    if stage is None or stage == "tables" or not job.runs:
        return out  # start-up only (unknown rules too: their cost is not modelled)
    wc = dict(job.wildcards)
    if stage == "toy":
        name = next(n for n, d in cfg["datasets"].items()
                    if d["format"] == "toy" and str(Path(d["annotations"]).parent) == wc.get("root"))
        workers = 2  # the toy_dataset rule's threads (workflow/rules/data.smk)
        out.ops.append(Op("toy_video", {}, (facts[name]["train"] + facts[name]["test"]) / workers))
        return out
    dataset = wc.pop("dataset")
    f = facts[dataset]
    ds = cfg["datasets"][dataset]
    h, w = f["storage"]
    frame_bytes = h * w * 3
    train_bytes = f["train"] * f["frames"] * frame_bytes
    test_bytes = f["test"] * f["test_frames"] * frame_bytes
    clip_len, size = ds["clip_len"], ds["input_size"]
    test_clip_bytes = f["test"] * 3 * clip_len * size * size
    K, N, M = f["classes"], f["train"], f["test"]
    out.bank_limit = ds["bank_gb"] * 1e9 if ds["bank_gb"] is not None else None
    if stage == "extract":
        threads = 4  # the extract rule's threads (workflow/rules/data.smk)
        out.ops.append(Op("extract_video", {"source_frames": f["source_frames"] or f["frames"]}, (N + M) / threads))
        return out
    if stage == "evaluate":
        _evaluate_ops(out, cfg, dataset, wc, f, ds, test_bytes, test_clip_bytes)
        return out
    s = stage_settings(cfg, stage, dataset, **wc)
    if stage == "teacher":
        t, arch = s["teacher"], s["arch"]
        key = _net({arch: s["model"]}, arch, clip_len, size)
        out.ops += _steps("train", N, t["batch"], key, t["epochs"])
        tests = t["epochs"] // t["eval_every"] + (1 if t["epochs"] % t["eval_every"] else 0)
        out.ops += _passes(M, 2 * t["batch"], key, tests)
        out.banks = [(train_bytes, N * t["epochs"]), (test_bytes, M)]
        out.resident_bytes = test_clip_bytes
        out.param_bytes = 4 * _params(arch, key["width"], K)
    elif stage == "experts":
        ex, arch = s["experts"], s["arch"]
        key = _net({arch: s["model"]}, arch, clip_len, size)
        n_exp = 1 if "expert" in wc else ex["num_experts"]  # one job per expert, or all in one job
        out.ops += _steps("train", N, ex["batch"], key, ex["epochs"] * n_exp)
        out.ops += _passes(M, 64, key, n_exp)
        out.banks = [(train_bytes, N * ex["epochs"] * n_exp), (test_bytes, M * n_exp)]
        out.param_bytes = 4 * _params(arch, key["width"], K)
    elif stage == "stats":
        arch = s["arch"]
        key = _net({arch: s["model"]}, arch, clip_len, size)
        out.ops += _passes(N, 64, key)
        out.banks = [(train_bytes, N)]
        out.param_bytes = 4 * _params(arch, key["width"], K)
    elif stage == "condense":
        _condense_ops(out, cfg, dataset, s, f, ds, train_bytes, frame_bytes)
    return out


def _condense_ops(out: JobOps, cfg: dict, dataset: str, s: dict, f: dict, ds: dict, train_bytes: float,
                  frame_bytes: float) -> None:
    ms, ipc = s["settings"], int(s["ipc"])
    base = ms["base"]
    K, N = f["classes"], f["train"]
    per_class = max(1, N // max(K, 1))
    clip_len, size = ds["clip_len"], ds["input_size"]
    t_c = int(ms["temporal"].split("-")[0][2:])
    teacher = s["teacher_arch"]
    tkey = _net(s["models"], teacher, clip_len, size) if teacher in s["models"] else None
    if base in ("herding", "full"):  # the train split, and the clips read from it when it is streamed
        out.banks = [(train_bytes, N)]
    elif base == "rded":
        out.banks = [(train_bytes, K * min(ms["mipc"], per_class))]
    elif base == "datm":
        out.banks = [(train_bytes, K * min(ms["init_candidates"], per_class))]
    if base == "herding":
        out.ops += _passes(N, ms["batch"], tkey)
        out.param_bytes = 4 * _params(teacher, tkey["width"], K)
    elif base == "rded":
        cands = K * min(ms["mipc"], per_class) * ms["clips_per_video"]
        out.ops += _passes(cands, ms["batch"], {**tkey, "frames": t_c})
        out.param_bytes = 4 * _params(teacher, tkey["width"], K)
    elif base == "edc":
        nets = ms["networks"]
        n_syn = ipc * K
        batch = min(ms["batch"], n_syn)
        chunks = [min(batch, n_syn - a) for a in range(0, n_syn, batch)]
        for b in chunks:
            for arch in nets:  # networks in rotation: each takes iterations / len(nets) steps
                key = {**_net(s["models"], arch, clip_len, size), "t_c": t_c, "batch": b}
                out.ops.append(Op("edc", key, ms["iterations"] / len(nets)))
        out.load_bytes = n_syn * t_c * frame_bytes  # the edc op's measured peak holds clips, Adam and network
    elif base == "datm":
        arch = s["experts_arch"]
        n_syn = ipc * K
        key = {**_net({arch: s["experts_model"]}, arch, clip_len, size), "t_c": t_c,
               "batch_syn": int(ms["batch_syn"] or n_syn), "syn_steps": int(ms["syn_steps"]),
               "memory": ms["memory"]}
        out.ops.append(Op("datm", key, ms["iterations"]))
        num_experts = section(cfg, dataset, "experts")["num_experts"]
        cands = K * min(ms["init_candidates"], per_class)  # scored by every expert at initialisation
        out.ops += _passes(cands, 64, _net({arch: s["experts_model"]}, arch, clip_len, size), num_experts)
        # the datm op's measured peak holds the synthetic set, the snapshots and the network


def _evaluate_ops(out: JobOps, cfg: dict, dataset: str, wc: dict, f: dict, ds: dict, test_bytes: float,
                  test_clip_bytes: float) -> None:
    s = stage_settings(cfg, "evaluate", dataset, **wc)
    ev, arch = s["evaluate"], s["arch"]
    K, M = f["classes"], f["test"]
    method, ipc = wc["method"], int(wc["ipc"])
    n_c = f["train"] if method_settings(cfg, dataset, method, ipc)["base"] == "full" else ipc * K
    per_class = ipc if ipc else max(1, round(n_c / K))  # IPC 0: every training clip (vdc/evaluate.py)
    batch = int(ds["base_batch"]) * per_class
    clip_len, size = ds["clip_len"], ds["input_size"]
    key = _net({arch: s["model"]}, arch, clip_len, size)
    out.ops += _steps("train", n_c, batch, key, ev["epochs"])
    labels = wc["labels"]
    if labels != "hard":
        lab = s["labeler_arch"]
        lkey = _net({lab: s["labeler_model"]}, lab, clip_len, size)
        if labels == "multisl":
            out.ops += _steps("forward", n_c, batch, lkey, ev["epochs"])
        else:
            out.ops += _passes(n_c, ev["test_batch"], lkey)
        out.param_bytes += 4 * _params(lab, lkey["width"], K)
    from vdc.evaluate import late_epochs

    tested = set(late_epochs(ev["epochs"], ev["late_epochs"]))
    if ev["test_every"]:
        tested |= {e for e in range(ev["epochs"]) if (e + 1) % ev["test_every"] == 0}
    out.ops += _passes(M, ev["test_batch"], key, len(tested))
    out.banks = [(test_bytes, M)]
    out.resident_bytes = test_clip_bytes + n_c * clip_len * f["storage"][0] * f["storage"][1] * 3
    out.param_bytes += 4 * _params(arch, key["width"], K)


# ============================================================================ per-step costs

SCALAR_OPS = ("startup", "load", "extract_video", "toy_video", "clip_read")
CLIP_READ_S = 1.2e-4  # one random clip from a frames HDF5, warm (machine.md: 0.09-0.13 ms), when unmeasured


class Costs:
    """A bench file (format ``vdc-costs-1``): per-operation seconds and step peak memory with lookups
    (module docstring, 3)."""

    def __init__(self, data: dict, path: str):
        if data.get("format") != "vdc-costs-1":
            raise ConfigError(f"{path}: not a vdc bench file (format vdc-costs-1); write one with "
                              f"python -m vdc.bench costs --configfile CONFIG --out {path}")
        self.path = path
        self.device, self.source = data.get("device", "?"), data.get("source", "?")
        self._by_key = defaultdict(list)
        for e in data["entries"]:
            self._by_key[self._group(e)].append(e)
        self.scalars = {e["op"]: e for e in data["entries"] if e["op"] in SCALAR_OPS}
        self.device_memory = data.get("device_memory_bytes")  # the bank limit when a dataset sets no bank_gb
        self.clip_read_s = float(self.scalars.get("clip_read", {}).get("seconds", CLIP_READ_S))
        self.missing: set = set()

    @classmethod
    def load(cls, path) -> "Costs":
        from vdc.errors import load_json

        return cls(load_json(path, "vdc bench file", "write it with python -m vdc.bench costs"), str(path))

    @staticmethod
    def _group(e: dict) -> tuple:
        base = (e["op"], e.get("arch"), round(float(e.get("width", 0) or 0), 6), e.get("frames"), e.get("size"))
        if e["op"] == "datm":
            return base + (e.get("memory"),)
        return base

    def _rows(self, op: str, key: dict) -> tuple[list[dict], float]:
        """The entries of the operation's group and a time factor: 1, or frames / frames' of the nearest
        clip length measured for the same op, arch, width and size (3-D networks: cost ~ frames)."""
        group = self._group({"op": op, **key})
        rows = self._by_key.get(group, [])
        if rows or op == "datm":
            return rows, 1.0
        other = [g for g in self._by_key if g[:3] == group[:3] and g[4] == key.get("size")
                 and g[3] and key.get("frames")]
        if not other:
            return [], 1.0
        g = min(other, key=lambda g: abs(g[3] - key["frames"]))
        return self._by_key[g], key["frames"] / g[3]

    def lookup(self, op: str, key: dict) -> tuple[float, float | None] | None:
        """(seconds, step peak bytes or None) of one operation, or None when the file has no entry."""
        if op == "toy_video":
            per = self.scalar(op, "seconds")
            return None if per is None else (per, None)
        if op == "extract_video":  # host decoding: source frames / frames per second (a default rate if unmeasured)
            fps = float(self.scalars.get(op, {}).get("frames_per_s", DECODE_FPS))
            return key["source_frames"] / fps, None
        rows, factor = self._rows(op, key)
        if not rows:
            self.missing.add(json.dumps({"op": op, **{k: v for k, v in key.items() if k != "batch"}}, sort_keys=True))
            return None
        if op == "datm":  # seconds per iteration ~ syn_steps x batch_syn; peak ~ batch_syn (recompute: flat in steps)
            best = min(rows, key=lambda r: (abs(r["batch_syn"] - key["batch_syn"]), abs(r["syn_steps"] - key["syn_steps"])))
            scale_t = key["syn_steps"] / best["syn_steps"] * key["batch_syn"] / best["batch_syn"]
            scale_m = key["batch_syn"] / best["batch_syn"] * (key["syn_steps"] / best["syn_steps"]
                                                              if key["memory"] == "naive" else 1.0)
            peak = best.get("peak_bytes")
            return best["seconds"] * scale_t, (peak * scale_m if peak else None)
        t, m = _interpolate(rows, key["batch"])
        return t * factor, (m * factor if m else m)

    def scalar(self, op: str, field_name: str) -> float | None:
        e = self.scalars.get(op)
        if e is None:
            self.missing.add(json.dumps({"op": op}))
            return None
        return float(e[field_name])


def _interpolate(rows: list[dict], b: int) -> tuple[float, float | None]:
    """Seconds and peak at batch b: linear between the two nearest measured batches (extrapolated
    beyond them, never below the proportional estimate from the nearest), proportional from one."""
    rows = sorted(rows, key=lambda r: r["batch"])
    for r in rows:
        if r["batch"] == b:
            return r["seconds"], r.get("peak_bytes")
    near = sorted(rows, key=lambda r: abs(r["batch"] - b))[:2]
    prop_t = near[0]["seconds"] * b / near[0]["batch"]
    p0 = near[0].get("peak_bytes")
    prop_m = p0 * b / near[0]["batch"] if p0 else None
    if len(near) == 1:
        return prop_t, prop_m
    (b0, t0, m0), (b1, t1, m1) = ((r["batch"], r["seconds"], r.get("peak_bytes")) for r in sorted(near, key=lambda r: r["batch"]))
    t = t0 + (t1 - t0) * (b - b0) / (b1 - b0)
    m = m0 + (m1 - m0) * (b - b0) / (b1 - b0) if (m0 and m1) else prop_m
    if b < b0:
        t, m = max(t, prop_t), (max(m, prop_m) if (m and prop_m) else m)
    return t, m


# ============================================================================ the estimate

@dataclass
class JobEstimate:
    rule: str
    seconds: float
    peak_bytes: float
    host: bool
    complete: bool


def estimate_job(j: JobOps, costs: Costs) -> JobEstimate:
    host = j.rule not in DEVICE_RULES
    if not j.runs:
        return JobEstimate(j.rule, 0.0, 0.0, host, True)
    startup = costs.scalar("startup", "seconds")
    complete = startup is not None
    secs = startup or 0.0
    # a split larger than the bank limit (bank_gb, else 90 % of the device's memory) is streamed from the
    # file: no upfront load, one HDF5 read per clip instead (vdc.data.frames.load_bank)
    limit = j.bank_limit if j.bank_limit is not None else (0.9 * costs.device_memory if costs.device_memory else math.inf)
    resident, load = j.resident_bytes, j.load_bytes
    for nbytes, clips in j.banks:
        if nbytes <= limit:
            load, resident = load + nbytes, resident + nbytes
        else:
            secs += clips * costs.clip_read_s
    if load:
        rate = costs.scalar("load", "bytes_per_s")
        complete &= rate is not None
        secs += load / rate if rate else 0.0
    step_peak = 0.0
    for op in j.ops:
        got = costs.lookup(op.op, op.key)
        if got is None:
            complete = False
            continue
        t, m = got
        secs += op.count * t
        step_peak = max(step_peak, m or 0.0)
    peak = 0.0 if host else resident + j.param_bytes + step_peak
    return JobEstimate(j.rule, secs, peak, host, complete)


def summarise(estimates: list[JobEstimate]) -> dict:
    rules: dict = {}
    for e in estimates:
        r = rules.setdefault(e.rule, {"jobs": 0, "seconds": 0.0, "peak_bytes": 0.0, "host": e.host, "complete": True,
                                      "max_job_seconds": 0.0})
        r["jobs"] += 1
        r["seconds"] += e.seconds
        r["peak_bytes"] = max(r["peak_bytes"], e.peak_bytes)
        r["complete"] &= e.complete
        r["max_job_seconds"] = max(r["max_job_seconds"], e.seconds)
    dev = [r for r in rules.values() if not r["host"]]
    total = {"jobs": sum(r["jobs"] for r in rules.values()),
             "device_seconds": sum(r["seconds"] for r in dev),
             "host_seconds": sum(r["seconds"] for r in rules.values() if r["host"]),
             "peak_bytes": max([r["peak_bytes"] for r in dev] or [0.0]),
             "complete": all(r["complete"] for r in rules.values())}
    return {"rules": rules, "total": total}


def measured_benchmarks(folder) -> dict:
    """{rule: {"jobs", "seconds"}} from Snakemake benchmark TSVs (<folder>/<rule>/**/*.tsv, column s)."""
    out: dict = {}
    for tsv in sorted(Path(folder).glob("*/**/*.tsv")):
        rule = tsv.relative_to(folder).parts[0]
        lines = tsv.read_text().splitlines()
        if len(lines) < 2:
            continue
        secs = sum(float(ln.split("\t")[0]) for ln in lines[1:] if ln.strip())
        r = out.setdefault(RENAMED.get(rule, rule), {"jobs": 0, "seconds": 0.0})
        r["jobs"] += 1
        r["seconds"] += secs
    return out


RENAMED = {"edc_stats": "stats"}  # rules renamed since older runs (issue 10), so their benchmarks compare


def plan(config_files: list[str], bench: str | None = None, overrides: dict | None = None, sizes: dict | None = None,
         snakefile=None) -> dict:
    """The whole plan as a dict (what ``--json`` writes)."""
    cfg, jobs = dag_jobs(config_files, overrides, snakefile)
    costs, bench_note = _costs(bench)
    facts = {name: dataset_facts(cfg, name, sizes) for name in cfg["study"]["datasets"]}
    ests = [estimate_job(job_ops(j, cfg, facts), costs) for j in jobs]
    out = summarise(ests)
    out.update(config=list(config_files), bench={"path": costs.path, "device": costs.device, "source": costs.source,
                                                 "note": bench_note},
               datasets=facts, missing=sorted(costs.missing))
    return out


def _costs(bench: str | None) -> tuple[Costs, str]:
    if bench:
        return Costs.load(bench), ""
    if DEFAULT_BENCH.is_file():
        return Costs.load(DEFAULT_BENCH), f"default bench file {DEFAULT_BENCH}"
    from vdc.bench.anchors import anchors_costs

    return (Costs(anchors_costs(), "built-in: vdc/bench/anchors.py"),
            "no bench file given and none at benchmarks/vdc-costs.json: the built-in H200 figures of gpu-anchors.md "
            "(not measured by vdc). Measure this device: python -m vdc.bench costs --configfile CONFIG")


# ============================================================================ output

def _hours(s: float) -> str:
    return f"{s / 3600:.3g}" if s >= 36 else f"{s / 3600:.2g}"


def render(p: dict, compare: dict | None = None) -> str:
    lines = [f"plan for {' + '.join(p['config'])}",
             f"per-step costs: {p['bench']['path']} — device {p['bench']['device']}; {p['bench']['source']}"]
    if p["bench"]["note"]:
        lines.append(f"  ({p['bench']['note']})")
    for name, f in p["datasets"].items():
        lines.append(f"dataset {name}: {f['train']} train / {f['test']} test videos, {f['classes']} classes, "
                     f"~{f['frames']:.0f} stored frames per video ({f['source']})")
    head = f"{'rule':<14}{'jobs':>6}{'device-h':>11}{'host-h':>9}{'peak GiB':>10}{'max job':>10}"
    if compare is not None:
        head += f"{'measured':>11}{'est/meas':>9}"
    lines += ["", head]
    for rule, r in sorted(p["rules"].items(), key=lambda kv: -kv[1]["seconds"]):
        mark = "" if r["complete"] else " ≥"
        dev = "" if r["host"] else _hours(r["seconds"]) + mark
        host = _hours(r["seconds"]) if r["host"] else ""
        peak = f"{r['peak_bytes'] / GIB:.2f}" if r["peak_bytes"] else ""
        line = f"{rule:<14}{r['jobs']:>6}{dev:>11}{host:>9}{peak:>10}{_clock(r['max_job_seconds']):>10}"
        if compare is not None:
            m = compare.get(rule)
            if m:
                ratio = r["seconds"] / m["seconds"] if m["seconds"] > 0 else float("nan")
                line += f"{_hours(m['seconds']):>11}{ratio:>9.2f}"
        lines.append(line)
    t = p["total"]
    line = (f"{'total':<14}{t['jobs']:>6}{_hours(t['device_seconds']) + ('' if t['complete'] else ' ≥'):>11}"
            f"{_hours(t['host_seconds']):>9}{t['peak_bytes'] / GIB:>10.2f}{'':>10}")
    if compare is not None:
        meas = sum(m["seconds"] for m in compare.values())
        est = t["device_seconds"] + t["host_seconds"]
        line += f"{_hours(meas):>11}{est / meas if meas else float('nan'):>9.2f}"
    lines.append(line)
    lines.append("device-h: sum of the device jobs' seconds (one GPU per job); peak GiB: the largest job's resident "
                 "data + parameters + step peak; max job: the longest job")
    if compare is not None:
        lines.append("measured: the sum of the benchmarks' wall seconds (s column) of the finished run; est/meas: "
                     "estimate / measured (device + host jobs)")
    if p["missing"]:
        lines.append(f"missing from the bench file ({len(p['missing'])} operations; their cost is left out, '≥'): "
                     + "; ".join(p["missing"][:6]) + (" ..." if len(p["missing"]) > 6 else ""))
        lines.append("  measure them: python -m vdc.bench costs --configfile ... --out FILE, then --bench FILE")
    return "\n".join(lines)


def _clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _parse_sizes(items: list[str] | None) -> dict:
    out = {}
    for it in items or []:
        name, _, vals = it.partition("=")
        try:
            tr, te, k, fr = (float(v) for v in vals.split(","))
        except ValueError:
            raise ConfigError(f"--sizes {it}: expected NAME=TRAIN,TEST,CLASSES,FRAMES_PER_VIDEO") from None
        out[name] = {"train": int(tr), "test": int(te), "classes": int(k), "frames": fr, "test_frames": fr}
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configfile", nargs="+", action="extend", default=[], metavar="FILE",
                   help="config file(s), merged in order as `snakemake --configfile A B` does (default: config.yaml)")
    p.add_argument("--config", dest="config_vdc", metavar="FILE", help="a vdc config file (same as one --configfile)")
    p.add_argument("--bench", help=f"bench file of per-step costs (python -m vdc.bench costs; default "
                                   f"{DEFAULT_BENCH} when it exists, else the built-in H200 figures)")
    p.add_argument("--compare", metavar="DIR", help="a finished run's benchmarks/ folder: measured seconds per rule next to the estimate")
    p.add_argument("--sizes", nargs="+", metavar="NAME=TRAIN,TEST,CLASSES,FRAMES",
                   help="dataset sizes when no frames file exists and the format's paper size does not apply")
    p.add_argument("--snakefile", help="the workflow (default: the Snakefile of this vdc checkout)")
    p.add_argument("--json", help="also write the plan as JSON here")


def main(args: argparse.Namespace) -> int:
    files = list(args.configfile) + ([args.config_vdc] if args.config_vdc else [])
    if not files:
        files = ["config.yaml"]
    p = plan(files, args.bench, sizes=_parse_sizes(args.sizes), snakefile=args.snakefile)
    compare = measured_benchmarks(args.compare) if args.compare else None
    if compare is not None:
        p["measured"] = compare
    print(render(p, compare))
    if args.json:
        from vdc.utils import write_json

        write_json(args.json, p)
    return 0
