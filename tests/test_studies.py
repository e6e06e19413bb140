"""Studies (vdc/studies.py): each table expands to exactly the runs its cells need, shared runs are one
file, temporal tags are explicit and canonical, and the workflow's dry-run plans the same runs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from vdc.config import ConfigError, deep_merge, load_config, validate_config
from vdc.studies import STUDIES, Run, canonical_temporal, check, spec, study_methods, study_runs, teacher_archs

ROOT = Path(__file__).resolve().parents[1]


def config(**over) -> dict:
    base = {
        "results": "res",
        "study": {"datasets": ["toy"], "methods": ["random", "rded", "edc", "datm"], "ipc": [1, 5], "seeds": [0, 1],
                  "labels": ["hard", "soft", "multisl"], "cross_arch": ["minic3d", "i3d_r18"],
                  "edc_networks": ["edc", "edc_i3d"], "full_data": True, "tables": list(STUDIES)},
        "datasets": {"toy": {"format": "toy", "video_root": "v", "annotations": "a", "storage_size": [64, 64],
                             "input_size": 48}},
        "methods": {"full": {}, "random": {}, "rded": {}, "edc": {}, "datm": {},
                    "edc_dagger": {"base": "edc", "class_wise": False},
                    "edc_i3d": {"base": "edc", "networks": ["minic3d", "i3d_r18"]}},
    }
    return validate_config(deep_merge(base, over))


def runs(cfg, name) -> set[Run]:
    return set(spec(cfg, name).runs())


def test_canonical_temporal_tags():
    assert canonical_temporal("tc4-sliding-linear", 8) == "tc4-naive-linear"   # sliding over <= clip_len: naive
    assert canonical_temporal("tc8-segment-none", 8) == "tc8-naive-none"
    assert canonical_temporal("tc16-sliding-linear", 8) == "tc16-sliding-none"  # nothing to interpolate
    assert canonical_temporal("tc16-segment-none", 8) == "tc16-segment-none"
    assert canonical_temporal("tc4-naive-dup", 8) == "tc4-naive-dup"


def test_table2_is_methods_x_labels_x_cutmix():
    cfg = config()
    got = runs(cfg, "table2")
    want = {Run("toy", m, 1, "tc8-naive-none", s, "minic3d", lab, "ce" if lab == "hard" else "msegt", c)
            for m in ("edc_dagger", "datm", "rded") for lab in ("hard", "soft", "multisl") for c in (True, False)
            for s in (0, 1)}
    assert got == want and len(got) == 36


def test_table3_varies_loss_and_shares_its_msegt_runs_with_table2():
    cfg = config()
    t3 = runs(cfg, "table3")
    assert len(t3) == 3 * 2 * 2 * 2 and {r.loss for r in t3} == {"kl", "msegt"} and not any(r.cutmix for r in t3)
    shared = t3 & runs(cfg, "table2")
    assert shared == {r for r in t3 if r.loss == "msegt"} and len(shared) == 12
    assert len(study_runs(cfg, ["table2", "table3"])) == 36 + 24 - 12


def test_temporal_tables_use_explicit_canonical_tags_and_share_runs():
    cfg = config()
    t4, t10, t5 = runs(cfg, "table4"), runs(cfg, "table10"), runs(cfg, "table5")
    assert {r.temporal for r in t4} == {"tc8-naive-none", "tc16-segment-none", "tc16-sliding-none", "tc4-naive-linear"}
    assert {r.method for r in t4} == {"rded", "edc", "datm"} and len(t4) == 4 * 3 * 2
    assert t10 <= t4 and {r.method for r in t10} == {"rded", "edc"}      # same study on the same toy data
    assert {r.temporal for r in t5} == {"tc8-naive-none", "tc4-naive-dup", "tc4-naive-linear"}
    # Table 4's Sliding + linear row and Table 5's Linear column are the same runs (one file each)
    lin4 = {r for r in t4 if r.temporal == "tc4-naive-linear"}
    assert lin4 and lin4 <= t5
    assert all(r.labels == "multisl" and r.ipc == 1 for r in t4 | t5)


def test_table6_keeps_the_frame_budget_and_interpolates_the_4_frame_column():
    cfg = config()
    t6 = runs(cfg, "table6")
    pairs = {(r.ipc, r.temporal) for r in t6}
    assert pairs == {(8, "tc4-naive-linear"), (4, "tc8-naive-none"), (2, "tc16-sliding-none"), (1, "tc32-sliding-none")}
    assert {r.ipc * int(re.match(r"tc(\d+)", r.temporal)[1]) for r in t6} == {32}
    assert {r.method for r in t6} == {"rded"} and len(t6) == 8


def test_table7_and_the_main_tables():
    cfg = config()
    assert {r.method for r in runs(cfg, "table7")} == {"edc", "edc_i3d"}
    t8 = runs(cfg, "table8")
    assert {r.labels for r in t8 if r.method != "full"} == {"soft"}
    assert {r for r in t8 if r.method == "full"} == {Run("toy", "full", 0, "tc8-naive-none", 0, "minic3d", "hard",
                                                         "ce", False)}
    assert {r.labels for r in runs(cfg, "table11")} == {"multisl"}
    assert {r.arch for r in runs(cfg, "table9")} == {"minic3d", "i3d_r18"}
    fig4 = runs(cfg, "figure4")
    assert len(fig4) == 4 * 2 * 3 * 2 and runs(cfg, "label_curves") <= fig4
    # the main tables follow each method's own temporal setting unless study.temporal says one for all
    assert {r.temporal for r in fig4 if r.method == "edc"} == {"tc8-naive-none"}   # EDC's default: T_c 8
    own = config(methods={"edc": {"temporal": "tc16-sliding-none"}})
    assert {r.temporal for r in runs(own, "figure4") if r.method == "edc"} == {"tc16-sliding-none"}
    one = config(methods={"edc": {"temporal": "tc16-sliding-none"}}, study={"temporal": "tc8-naive-none"})
    assert {r.temporal for n in ("table8", "table9", "table11", "figure4", "table7") for r in runs(one, n)} == \
        {"tc8-naive-none"}


def test_every_run_is_one_file_and_the_union_has_no_duplicates():
    cfg = config()
    everything = study_runs(cfg, list(STUDIES))
    paths = [r.eval_path(cfg) for r in everything]
    assert len(paths) == len(set(paths)) == len(everything)
    per_study = sum(len(runs(cfg, n)) for n in STUDIES)
    assert len(everything) < per_study  # studies share runs
    assert "edc_dagger" in study_methods(cfg)
    r = next(iter(runs(cfg, "table2")))
    assert r.eval_path(cfg).startswith("res/eval/toy/") and r.condensed_path(cfg).endswith(f"seed{r.seed}.h5")


def test_one_definition_of_a_runs_defaults_everywhere():
    """config.eval_path, the studies' runs and `python -m vdc settings` fill in a run's loss, CutMix and
    temporal tag the same way, a dataset's own evaluate overrides and a non-canonical tag included."""
    from vdc.config import eval_path
    from vdc.settings import wildcards_for
    from vdc.studies import make_run

    cfg = config(datasets={"toy": {"stage_overrides": {"evaluate": {"loss": "kl", "cutmix": True}}}},
                 methods={"rded": {"temporal": "tc8-sliding-none"}})
    run = make_run(cfg, "toy", "rded", 1, 0, "minic3d", "soft")
    assert (run.loss, run.cutmix, run.temporal) == ("kl", True, "tc8-naive-none")
    assert eval_path(cfg, "toy", "rded", 1, 0, "minic3d", "soft") == run.eval_path(cfg)
    assert "/ipc1-tc8-naive-none-seed0/minic3d-soft-kl-cutmix.json" in run.eval_path(cfg)
    wc = wildcards_for(cfg, "evaluate", "toy", labels="soft")
    assert (wc["loss"], wc["cutmix"]) == ("kl", "cutmix")


def test_study_datasets_seeds_and_labeler_follow_the_config():
    cfg = config(studies={"table5": {"datasets": ["toy"], "seeds": [3]}},
                 evaluate={"labeler_arch": "student"})
    assert {r.seed for r in runs(cfg, "table5")} == {3}
    archs = teacher_archs(cfg, list(runs(cfg, "table9")))
    assert archs == {"toy": ["i3d_r18", "minic3d"]}     # soft / Multi-SL labels from the student's own arch


def test_config_mistakes_name_the_study_and_the_fix():
    cfg = config()
    del cfg["methods"]["edc_dagger"]
    with pytest.raises(ConfigError, match=r"study table2.*edc_dagger.*class_wise: false"):
        spec(cfg, "table2")
    assert any("table3" in line for line in check(cfg))
    with pytest.raises(ConfigError, match=r"study table2.*edc_dagger"):   # validation says it up front
        validate_config(cfg)
    with pytest.raises(ConfigError, match="study.edc_networks is empty"):
        config(study={"edc_networks": []})
    cfg = config(study={"edc_networks": [], "tables": ["table8"]})
    with pytest.raises(ConfigError, match="study.edc_networks is empty"):
        spec(cfg, "table7")
    with pytest.raises(ConfigError, match="no study"):
        spec(cfg, "table12")
    with pytest.raises(ConfigError, match="study.tables"):
        config(study={"tables": ["table12"]})
    with pytest.raises(ConfigError, match="studies.table6.columns"):
        config(studies={"table6": {"columns": [{"ipc": 8}]}})


def test_shipped_configs_expand():
    """The toy ablation config runs every study; the paper configs expand to their own studies."""
    counts = {}
    for name in ("config.yaml", "configs/toy-ablations.yaml", "configs/ucf101.yaml", "configs/hmdb51.yaml",
                 "configs/ssv2.yaml", "configs/k400.yaml"):
        cfg = load_config(ROOT / name)
        assert check(cfg) == [], name
        counts[name] = len(study_runs(cfg))
    abl = load_config(ROOT / "configs" / "toy-ablations.yaml")
    assert set(abl["study"]["tables"]) == set(STUDIES)
    assert counts["configs/toy-ablations.yaml"] > counts["config.yaml"]


@pytest.mark.slow
def test_dry_run_plans_exactly_the_expanded_runs():
    """`snakemake -n` plans one evaluate job per run of the studies (toy ablation config), and
    `snakemake table5` exactly Table 5's runs."""
    cfg = load_config(ROOT / "configs" / "toy-ablations.yaml")
    snake = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--forceall"]

    def planned(*args):
        res = subprocess.run(snake + list(args), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", res.stdout, re.M)}

    jobs = planned("--configfile", "configs/toy-ablations.yaml")
    everything = set(study_runs(cfg))   # includes the full-data run (Table 8's protocol row)
    assert jobs["evaluate"] == len(everything)
    assert jobs["condense"] == len({r.condensed_path(cfg) for r in everything})
    assert jobs["tables"] == len(STUDIES)
    t5 = planned("table5", "--configfile", "configs/toy-ablations.yaml")
    assert t5["evaluate"] == len(spec(cfg, "table5").runs()) and t5["tables"] == 1
