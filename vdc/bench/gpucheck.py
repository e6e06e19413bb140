"""``python -m vdc.bench gpucheck <part>``: the parts of scripts/gpu-check.sh that are not a plain benchmark.

* ``evaluation`` - one UCF101 IPC-1 evaluation exactly as ``vdc evaluate`` runs it (the real
  ``vdc.evaluate.evaluate`` on files): configs/ucf101.yaml's settings (MiniC3D, 300 epochs, Multi-SL
  labels from a MiniC3D labeler, MSE-GT, batch 10, test passes at the late epochs) with
  ``deterministic: false`` and the default fast paths, on synthetic UCF101-shaped data: 101 classes,
  a selected set of 101 uint8 clips 8x128x170, 3,783 test videos of 8 frames at 128x170 (2 GB; the
  centre clip of a short video is all its frames, so preparing it costs what it does for real videos).
  Reports the
  wall time (issue 13's target: <= 30 s on one H200) and its parts.
* ``smoke``      - a short paper-scale run of every device stage through its command line
  (``python -m vdc <stage> --config ... --dataset ucf101``, in this process): configs/ucf101.yaml at
  full width and 8x112^2 clips from 128x170 frames, on synthetic frames of 101 classes x (2 train +
  1 test) videos, with few steps: teacher (2 epochs), experts (2 x 2 epochs), EDC statistics,
  condense with random, herding, RDED, EDC and DATM at IPC 1 (2 iterations each; DATM 4 inner steps,
  recompute), and evaluate (2 epochs, Multi-SL) of each set on MiniC3D plus the random set on
  R(2+1)D-18, I3D-R18 and SlowOnly-R18. Each stage's seconds, exit status and error are recorded.
* ``report``     - merges the JSON files of a gpu-check folder into ``gpu-check.json``: every figure
  with the issue's target next to it (met: true / false, or null when not measured).

``--tiny`` shrinks every size (classes, videos, widths, frames, epochs) so the same code runs in
seconds on a CPU (tests/test_gpucheck.py); the figures are then meaningless, the code paths are not.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
UCF101 = REPO / "configs" / "ucf101.yaml"
GIB = 2 ** 30

# The sizes of each part: UCF101 as the paper runs it, and a CPU-sized stand-in with the same code paths.
FULL = {"classes": 101, "test_videos": 3783, "storage": [128, 170], "input": 112, "width": 1.0, "eval_epochs": 300,
        "late_epochs": None, "base_batch": 10, "smoke_train": 2, "smoke_test": 1, "frames": 16}
TINY = {"classes": 4, "test_videos": 24, "storage": [52, 56], "input": 48, "width": 0.125, "eval_epochs": 3,
        "late_epochs": [1, 2], "base_batch": 2, "smoke_train": 2, "smoke_test": 1, "frames": 16}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("part", choices=["evaluation", "smoke", "report"])
    p.add_argument("--tiny", action="store_true", help="CPU-sized: same code paths, tiny sizes")
    p.add_argument("--json", help="evaluation / smoke: the figures' JSON file")
    p.add_argument("--dir", help="report: the folder of the parts' JSON files (writes gpu-check.json there)")
    p.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    p.add_argument("--config", default=str(UCF101), help="the paper config the parts start from")


# ============================================================================ shared pieces

def _overrides(size: dict, root: Path, tiny: bool) -> dict:
    """What the check changes in the paper config: its own folders, the fast GPU mode, and (tiny) sizes."""
    o = {"results": str(root / "results"), "workdir": str(root / "work"), "logs": str(root / "logs"),
         "device": "auto", "deterministic": False,
         "datasets": {"ucf101": {"video_root": str(root / "videos"), "annotations": str(root / "annotations"),
                                 "storage_size": size["storage"], "input_size": size["input"],
                                 "base_batch": size["base_batch"]}}}
    if tiny:
        o["models"] = {a: {"width": size["width"] / (2 if a == "r2plus1d_r18" else 1)}
                       for a in ("minic3d", "minic3d_in", "r2plus1d_r18", "i3d_r18", "slowonly_r18")}
        o["evaluate"] = {"test_batch": 8}
        o["threads"] = {"teacher": 1, "experts": 1, "stats": 1, "condense": 1, "evaluate": 1}
    return o


def _config(path, overrides: dict) -> dict:
    from vdc.config import load_config

    return load_config(path, overrides=overrides)


def synthetic_frames(path: Path, classes: int, train_videos: int, test_videos: int, frames: int, storage,
                     seed: int = 0) -> None:
    """A frames HDF5 of noise videos whose mean brightness encodes the class (vdc.data.frames.write_frames);
    video i of a split has class i mod classes."""
    from vdc.data.frames import write_frames

    rng = np.random.default_rng(seed)
    h, w = storage
    block = rng.integers(0, 96, (frames, h, w, 3), dtype=np.uint8)  # shared noise: cheap for 3,783 videos
    videos, labels, splits = [], [], []
    for split, n in ((0, train_videos), (1, test_videos)):
        for i in range(n):
            c = i % classes
            shift = np.uint8(int(rng.integers(0, 32)) + (150 * c) // max(classes - 1, 1))
            videos.append(np.roll(block, int(rng.integers(0, frames)), axis=0) + shift)
            labels.append(c), splits.append(split)
    write_frames(path, videos, labels, splits, [f"class{c:03d}" for c in range(classes)])


def _device_info() -> dict:
    import torch

    info = {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node(),
            "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=torch.cuda.get_device_properties(0).total_memory / GIB)
    return info


# ============================================================================ one UCF101 IPC-1 evaluation

def evaluation(size: dict, root: Path, config: str, tiny: bool) -> dict:
    import torch

    from vdc.condensed import CondensedSet
    from vdc.config import stage_settings
    from vdc.evaluate import evaluate
    from vdc.formats.teacher import save_teacher
    from vdc.models import create_model

    t0 = time.perf_counter()
    o = _overrides(size, root, tiny)
    o["evaluate"] = {**o.get("evaluate", {}), "epochs": size["eval_epochs"], "late_epochs": size["late_epochs"]}
    cfg = _config(config, o)
    k, (h, w) = size["classes"], size["storage"]
    ds = cfg["datasets"]["ucf101"]
    # clip_len frames per video: the centre window of a video shorter than clip_len x clip_interval takes
    # every frame (clips.center_frame_indices), so the test clips cost what full-length videos cost
    synthetic_frames(root / "frames.h5", k, k, size["test_videos"], ds["clip_len"], (h, w))
    rng = np.random.default_rng(1)
    CondensedSet(clips=rng.integers(0, 256, (k, ds["clip_len"], h, w, 3), dtype=np.uint8), labels=np.arange(k),
                 source_video=np.arange(k),
                 attrs={"dataset": "ucf101", "method": "random", "ipc": 1, "t_c": ds["clip_len"], "sampling": "naive",
                        "interpolation": "none", "seed": 0, "num_classes": k}).write(root / "set.h5")
    s = stage_settings(cfg, "evaluate", "ucf101", arch="minic3d", labels="multisl", loss="msegt", cutmix="nocutmix",
                       seed=0)
    lab = s["labeler_arch"]
    torch.manual_seed(0)
    save_teacher(root / "labeler.pt", lab, k, s["labeler_model"], create_model(lab, k, **s["labeler_model"]), {})
    prepared = time.perf_counter() - t0
    t1 = time.perf_counter()
    r = evaluate(root / "set.h5", root / "frames.h5", root / "labeler.pt", root / "eval.json", s, workdir=root / "work")
    wall = time.perf_counter() - t1
    return {"wall_s": wall, "evaluate_wall_time_s": r["wall_time_s"], "prepare_s": prepared, "epochs": len(r["curve"]),
            "iters_per_epoch": r["iters_per_epoch"], "batch": r["batch"], "test_passes": len(r["tests"]),
            "num_test": r["num_test"], "num_clips": r["num_clips"], "top1": r["top1"], "device": r["device"],
            "labels": "multisl", "labeler": lab, "performance": s["performance"], "deterministic": s["deterministic"]}


# ============================================================================ the smoke run

def smoke(size: dict, root: Path, config: str, tiny: bool) -> dict:
    from vdc.__main__ import main as vdc
    from vdc.config import PATHS, eval_path, labeler_arch

    o = _overrides(size, root, tiny)
    o["study"] = {"datasets": ["ucf101"], "ipc": [1], "seeds": [0]}
    o["teacher"] = {**o.get("teacher", {}), "epochs": 2, "warmup_epochs": 0, "milestones": [1], "eval_every": 1}
    o["experts"] = {**o.get("experts", {}), "num_experts": 2, "epochs": 2, "keep_epochs": 2}
    o["evaluate"] = {**o.get("evaluate", {}), "epochs": 2, "late_epochs": [1]}
    small = {"rded": {"mipc": 2, "clips_per_video": 2},
             "edc": {"iterations": 2, "checkpoint_every": 1},
             "datm": {"iterations": 2, "syn_steps": 4, "expert_epochs": 1, "min_start_epoch": 0,
                      "current_max_start_epoch": 1, "max_start_epoch": 1, "expansion_end_epoch": 1,
                      "init_candidates": 2, "checkpoint_every": 1}}
    o["methods"] = small
    o["datasets"]["ucf101"]["method_overrides"] = small
    cfg = _config(config, o)
    (root / "smoke.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    conf = ["--config", str(root / "smoke.yaml"), "--dataset", "ucf101"]
    ds = cfg["datasets"]["ucf101"]
    frames = root / "frames.h5"
    k = size["classes"]
    synthetic_frames(frames, k, k * size["smoke_train"], k * size["smoke_test"], size["frames"], size["storage"])
    p = lambda kind, **f: PATHS[kind].format(results=cfg["results"], dataset="ucf101", **f)  # noqa: E731
    teacher = cfg["teacher"]["arch"]
    stages = [("teacher", ["teacher", "--frames", str(frames), "--out", p("teacher", arch=teacher),
                           "--metrics", p("teacher_metrics", arch=teacher), "--arch", teacher, *conf]),
              ("experts", ["experts", "--frames", str(frames), "--out", p("experts"), *conf]),
              ("stats", ["stats", "--frames", str(frames), "--teacher", p("teacher", arch=teacher),
                         "--out", p("stats", arch=teacher), "--arch", teacher, *conf])]
    from vdc.config import method_settings

    sets = {}
    for method in ("random", "herding", "rded", "edc", "datm"):
        ms = method_settings(cfg, "ucf101", method, 1)
        out = p("condensed", method=method, ipc=1, temporal=ms["temporal"], seed=0)
        sets[method] = out
        extra = []
        if "teacher" in ms["needs"]:
            extra += ["--teacher", f"{teacher}={p('teacher', arch=teacher)}"]
        if "stats" in ms["needs"]:
            extra += ["--stats", f"{teacher}={p('stats', arch=teacher)}"]
        if "experts" in ms["needs"]:
            extra += ["--experts", p("experts")]
        if ms.get("init") == "rded":
            extra += ["--init", sets["rded"]]
        stages.append((f"condense {method}", ["condense", "--frames", str(frames), "--out", out, *extra,
                                              "--method", method, "--ipc", "1", "--seed", "0", *conf]))
    evals = [(m, "minic3d") for m in sets] + [("random", a) for a in ("r2plus1d_r18", "i3d_r18", "slowonly_r18")]
    for method, arch in evals:
        lab_arch = labeler_arch(cfg, "ucf101", arch)
        if lab_arch != teacher and not any(s[0] == f"teacher {lab_arch}" for s in stages):
            stages.insert(1, (f"teacher {lab_arch}", ["teacher", "--frames", str(frames), "--out", p("teacher", arch=lab_arch),
                                                      "--metrics", p("teacher_metrics", arch=lab_arch), "--arch", lab_arch, *conf]))
        out = eval_path(cfg, "ucf101", method, 1, 0, arch, "multisl")
        stages.append((f"evaluate {method} {arch}", ["evaluate", "--condensed", sets[method], "--frames", str(frames),
                                                     "--labeler", p("teacher", arch=lab_arch), "--out", out, "--arch", arch,
                                                     "--labels", "multisl", "--loss", cfg["evaluate"]["loss"],
                                                     "--seed", "0", *conf]))
    rows = []
    for name, argv in stages:
        t = time.perf_counter()
        try:
            rc, err = vdc(argv), None
        except BaseException as exc:  # a crash of one stage must not hide the others
            rc, err = 1, "".join(traceback.format_exception_only(type(exc), exc)).strip()
            traceback.print_exc()
        rows.append({"stage": name, "seconds": time.perf_counter() - t, "rc": rc, "error": err})
        print(f"smoke: {name:<28} rc {rc} in {rows[-1]['seconds']:.1f} s" + (f" ({err})" if err else ""), flush=True)
    results = {}
    for method, arch in evals:
        f = Path(eval_path(cfg, "ucf101", method, 1, 0, arch, "multisl"))
        if f.is_file():
            r = json.loads(f.read_text())
            results[f"{method} {arch}"] = {"top1": r["top1"], "wall_time_s": r["wall_time_s"]}
    return {"stages": rows, "ok": all(r["rc"] == 0 for r in rows), "evaluations": results,
            "classes": size["classes"], "videos_per_class": [size["smoke_train"], size["smoke_test"]],
            "clip": [ds["clip_len"], ds["input_size"], ds["input_size"]], "storage": ds["storage_size"],
            "total_s": sum(r["seconds"] for r in rows)}


# ============================================================================ the report

def _get(d, *path):
    """d[path[0]][path[1]]..., or None where a level is missing."""
    for p in path:
        d = d.get(p) if isinstance(d, dict) else None
    return d


def _row(measure: str, target: str, value, ok, note: str = "") -> dict:
    return {"measure": measure, "target": target, "measured": value, "met": ok, "note": note}


def report(folder: Path) -> dict:
    def load(name):
        f = folder / f"{name}.json"
        return json.loads(f.read_text()) if f.is_file() else None

    proto, datm, edc, ev, smk, costs = (load(n) for n in ("protocol", "datm", "edc", "evaluation", "smoke", "costs"))
    rows = []
    clip = "x".join(map(str, (proto or {}).get("clip", [8, 112, 112])))
    for b in sorted({r["batch"] for r in (proto or {}).get("rows", [])}) or [10, 100]:
        got = [r for r in (proto or {}).get("rows", []) if r["batch"] == b]
        by = {r["variant"]: r for r in got}
        r = by.get("bf16_cl") or (got[-1] if got else None)
        val = None if r is None else round(r["full_over_bare"], 3)
        rows.append(_row(f"protocol step / bare step, {clip}, batch {b}", ">= 0.8", val,
                         None if val is None else val >= 0.8,
                         "" if r is None else f"variant {r['variant']}; host syncs per step {r['host_syncs_per_step']}; "
                                              + ", ".join(f"{v['variant']} {v['full_over_bare']:.2f}" for v in got)))
    if ev:
        rows.append(_row("one UCF101 IPC-1 MiniC3D evaluation (300 epochs + late test passes)", "<= 30 s",
                         round(ev["wall_s"], 2), ev["wall_s"] <= 30,
                         f"{ev['epochs']} epochs x {ev['iters_per_epoch']} steps, {ev['test_passes']} test passes of "
                         f"{ev['num_test']} clips, {ev['labels']} labels; data preparation {ev['prepare_s']:.1f} s not counted"))
    else:
        rows.append(_row("one UCF101 IPC-1 MiniC3D evaluation (300 epochs + late test passes)", "<= 30 s", None, None))
    timing = (datm or {}).get("timing", [])
    both = sorted({r["steps"] for r in timing if r["mode"] == "naive"} & {r["steps"] for r in timing if r["mode"] == "recompute"})
    n = both[-1] if both else 20  # 20 at UCF101 scale (scripts/gpu-check.sh)
    rec = next((r for r in timing if r["mode"] == "recompute" and r["steps"] == n), None)
    nai = next((r for r in timing if r["mode"] == "naive" and r["steps"] == n), None)
    args = (datm or {}).get("args", {})
    case = f"{args.get('batch_syn', 101)} clips {args.get('frames', 8)}x{args.get('size', 112)}^2"
    peak = None if rec is None else rec["peak_bytes"] / GIB
    rows.append(_row(f"DATM peak memory (recompute), {n} steps, {case}", "<= 6 GiB",
                     None if peak is None else round(peak, 3), None if peak is None else peak <= 6))
    flat = (datm or {}).get("recompute_peak_ratio")
    steps = sorted(r["steps"] for r in timing if r["mode"] == "recompute")
    rows.append(_row(f"DATM recompute peak at {steps[-1] if steps else 40} / at {steps[0] if steps else 10} steps (flat)",
                     "~1 (<= 1.25)", None if flat is None else round(flat, 3), None if flat is None else flat <= 1.25))
    ratio = None if (rec is None or nai is None) else rec["time_s"] / nai["time_s"]
    rows.append(_row(f"DATM recompute time / naive time, {n} steps", "<= 1.25", None if ratio is None else round(ratio, 3),
                     None if ratio is None else ratio <= 1.25,
                     "" if ratio is None else f"naive {nai['time_s']:.2f} s, {nai['peak_bytes'] / GIB:.2f} GiB; "
                                              f"recompute {rec['time_s']:.2f} s"))
    agree = (datm or {}).get("agreement")
    if agree:
        rows.append(_row("DATM gradient agreement (relative L2 of the clip gradient to naive fp32, TF32 off)",
                         "bf16 within the fp32 spread before datm_bf16 is turned on", None, None,
                         "; ".join(f"{a['variant']}: clips {a['clips']:.1e} labels {a['labels']:.1e}" for a in agree[1:])))
    for variant in ("fp32", "bf16"):
        r = _get(edc, "variants", variant, "three in rotation")
        val = None if r is None else round(r["peak_gib"], 2)
        rows.append(_row(f"EDC peak memory, UCF101 IPC 1, MiniC3D + I3D + SlowOnly ({variant})", "<= 5 GiB", val,
                         None if val is None else val <= 5,
                         "" if r is None else ", ".join(f"{n['network']} {n['peak_bytes'] / GIB:.2f} GiB "
                                                         f"{n['s_per_iter'] * 1e3:.0f} ms" for n in r["networks"])))
    ceil = (proto or {}).get("ceiling")
    if ceil:
        by = {r["variant"]: r for r in ceil["rows"]}
        r = by.get("bf16_cl") or ceil["rows"][-1]
        rows.append(_row("MiniC3D train step at batch 256 / bf16 matmul ceiling", ">= 25 %",
                         round(100 * r["fraction_of_bf16_ceiling"], 1), r["fraction_of_bf16_ceiling"] >= 0.25,
                         f"variant {r['variant']}: {r['step_s'] * 1e3:.1f} ms, {r['achieved_tflops']:.1f} TFLOP/s of "
                         f"{ceil['matmul_bf16_tflops']:.0f}; " + ", ".join(f"{v['variant']} {100 * v['fraction_of_bf16_ceiling']:.1f} %"
                                                                          for v in ceil["rows"])))
    else:
        rows.append(_row("MiniC3D train step at batch 256 / bf16 matmul ceiling", ">= 25 %", None, None))
    if smk:
        failed = [s["stage"] for s in smk["stages"] if s["rc"] != 0]
        rows.append(_row("paper-scale smoke run (every device stage on synthetic UCF101-shaped frames)", "every stage exits 0",
                         f"{len(smk['stages']) - len(failed)}/{len(smk['stages'])} stages", not failed,
                         ("failed: " + ", ".join(failed)) if failed else f"{smk['total_s']:.0f} s"))
    else:
        rows.append(_row("paper-scale smoke run", "every stage exits 0", None, None))
    parts = {n: (folder / f"{n}.json").is_file() for n in ("protocol", "datm", "edc", "evaluation", "smoke", "costs")}
    return {"format": "vdc-gpu-check-1", "created": time.strftime("%Y-%m-%d %H:%M:%S"), "figures": rows,
            "parts_present": parts, "device": _device_info(),
            "costs_file": "costs.json (python -m vdc plan --bench costs.json)" if costs else None,
            "details": {"protocol": proto, "datm": datm, "edc": edc, "evaluation": ev, "smoke": smk}}


def print_report(rep: dict) -> None:
    print(f"\n{'measure':<78}{'target':>14}{'measured':>14}  met")
    for r in rep["figures"]:
        val = "-" if r["measured"] is None else str(r["measured"])
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        print(f"{r['measure'][:78]:<78}{r['target'][:14]:>14}{val[:14]:>14}  {met}")
        if r["note"]:
            print(f"    {r['note']}")


# ============================================================================ CLI

def main(a: argparse.Namespace) -> int:
    from vdc.utils import setup_logging, write_json

    size = TINY if a.tiny else FULL
    if a.part == "report":
        if not a.dir:
            raise SystemExit("report needs --dir (the folder of the parts' JSON files)")
        rep = report(Path(a.dir))
        rep["tiny"] = a.tiny
        write_json(Path(a.dir) / "gpu-check.json", rep)
        print_report(rep)
        return 0
    setup_logging()
    with tempfile.TemporaryDirectory(prefix=f"vdc-gpucheck-{a.part}-") as tmp:
        root = Path(a.workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        out = (evaluation if a.part == "evaluation" else smoke)(size, root, a.config, a.tiny)
        out.update(part=a.part, tiny=a.tiny, total_wall_s=time.perf_counter() - t, device_info=_device_info())
    print(json.dumps({k: v for k, v in out.items() if k not in ("stages", "device_info")}, indent=1, default=str))
    if a.json:
        write_json(a.json, out)
    return 0 if out.get("ok", True) else 1

