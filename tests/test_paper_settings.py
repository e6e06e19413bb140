"""The settings audit: the four paper configs against docs/paper-settings.md.

docs/paper-settings.md documents every setting of the paper's study in Markdown tables with the
columns ``| setting (key path) | scope | value | source |``:

* key path: where the setting lives in the resolved configuration (``teacher.lr``,
  ``methods.rded.mipc``, ``datasets.*.base_batch``; ``*`` = any key at that level, under ``datasets``
  the config's own dataset);
* scope: ``all`` or datasets (``ucf101, hmdb51``), optionally ``; IPC 5, 10``;
* value: YAML in backticks (a value in words, without backticks, is documentation only);
* source: a source containing the word **pending** marks a setting another change is adding — the
  row is skipped, with the reason, until the tag is removed.

Each ``configs/<ds>.yaml`` is resolved exactly as ``snakemake --configfile configs/<ds>.yaml`` resolves it
(``vdc.config.load_config`` on that file alone; :func:`test_snakemake_resolves_a_configfile_alone` runs
Snakemake on ``workflow/rules/common.smk`` to check that it sees the same configuration). A row is
checked against every job of the study that carries the setting — the settings dicts
``vdc.settings.job_settings`` builds with ``vdc.config.stage_settings``, which the workflow passes to the
jobs — restricted to the row's IPCs for condense jobs. A setting no job carries (``study``,
``studies``, ``tables``, methods outside the study, the protocol's ``evaluate.loss``) is read from the
resolved configuration. Every setting a job receives must have a row, and every toy value of
config.yaml injected into a paper config must make the audit fail.
"""
from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

from vdc.config import (
    ConfigError,
    deep_merge,
    load_config,
    method_settings,
    read_config_file,
    section,
    validate_config,
)
from vdc.settings import job_settings

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "paper-settings.md"
DATASETS = ("ucf101", "hmdb51", "ssv2", "k400")
HEADER = ["setting (key path)", "scope", "value", "source"]


# ----------------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Row:
    line: int
    key: tuple          # key path, "*" = any key at that level
    datasets: frozenset
    ipcs: frozenset | None  # None = every IPC
    checked: bool       # the value is YAML in backticks
    value: object
    pending: bool
    text: str           # the row as written, for messages

    def applies(self, dataset: str) -> bool:
        return dataset in self.datasets


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse_scope(text: str, where: str) -> tuple[frozenset, frozenset | None]:
    """``all`` / ``ucf101, hmdb51`` [``; IPC 1, 5``] -> (datasets, IPCs or None)."""
    part, _, ipc = text.partition(";")
    names = [t for t in re.split(r"[,\s]+", part) if t]
    datasets = frozenset(DATASETS) if names == ["all"] else frozenset(names)
    if not datasets or not datasets <= set(DATASETS):
        raise ValueError(f"{where}: scope '{text}' names no dataset of {DATASETS} (or 'all')")
    if not ipc.strip():
        return datasets, None
    m = re.fullmatch(r"\s*IPC\s+([\d,\s]+)", ipc)
    if not m:
        raise ValueError(f"{where}: scope '{text}': after ';' write 'IPC <n>[, <n>]'")
    return datasets, frozenset(int(n) for n in re.findall(r"\d+", m.group(1)))


def parse_rows(path: Path = DOC) -> list[Row]:
    """Every row of every table of ``path`` whose header is HEADER."""
    rows, in_table = [], False
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.lstrip().startswith("|"):
            in_table = False
            continue
        cells = _cells(line)
        if cells == HEADER:
            in_table = True
            continue
        if not in_table or set("".join(cells)) <= set("-: "):
            continue
        where = f"{path.name}:{no}"
        if len(cells) != 4:
            raise ValueError(f"{where}: expected 4 cells, got {len(cells)}: {line}")
        key_m = re.fullmatch(r"`([A-Za-z0-9_.*]+)`", cells[0])
        if not key_m:
            raise ValueError(f"{where}: the setting must be one key path in backticks, got '{cells[0]}'")
        datasets, ipcs = parse_scope(cells[1], where)
        val_m = re.fullmatch(r"`(.*)`", cells[2])
        value = yaml.safe_load(val_m.group(1)) if val_m else None
        rows.append(Row(no, tuple(key_m.group(1).split(".")), datasets, ipcs, bool(val_m), value,
                        bool(re.search(r"\bpending\b", cells[3])), line.strip()))
    return rows


ROWS = parse_rows()


# ----------------------------------------------------------------------------------- resolution

def job_view(cfg: dict, stage: str, ds: str, wc: dict, s: dict) -> dict:
    """One job's settings arranged under the documentation's key paths: its teacher / experts /
    evaluate / performance sections, its dataset under datasets.<ds>, every network it builds under
    models.<arch>, and (condense) the method's resolved settings under methods.<name> — a variant's
    inherited settings under its base method's name."""
    v: dict = {k: s[k] for k in ("device", "deterministic", "workdir", "performance") if k in s}
    for sec in ("teacher", "experts"):
        if sec in s:
            v[sec] = s[sec]
    if "evaluate" in s:  # labels / loss / cutmix of a job are its wildcards, the protocol's are in the config
        v["evaluate"] = {k: x for k, x in s["evaluate"].items() if k not in ("labels", "loss", "cutmix")}
    v["datasets"] = {ds: {k: x for k, x in s["dataset"].items()
                          if k not in ("name", "method_overrides", "stage_overrides")}}
    models = {}
    if "model" in s:
        models[s["arch"]] = s["model"]
    models.update(s.get("models", {}))
    for arch_key, model_key in (("labeler_arch", "labeler_model"), ("experts_arch", "experts_model")):
        if model_key in s:
            models[s[arch_key]] = s[model_key]
    if models:
        v["models"] = models
    if stage == "condense":
        name, ms = s["method"], s["settings"]
        raw = cfg["methods"][name]
        methods: dict = {}
        for k, x in ms.items():
            if k == "base":
                continue
            owner = name if (ms["base"] == name or k in raw) else ms["base"]
            methods.setdefault(owner, {})[k] = x
        v["methods"] = methods
    return v


def find(tree, key: tuple) -> list:
    """The subtrees of ``tree`` at key path ``key`` ('*' matches every key at its level)."""
    if not key:
        return [tree]
    if not isinstance(tree, dict):
        return []
    head, rest = key[0], key[1:]
    if head == "*":
        return [x for k in tree for x in find(tree[k], rest)]
    for k in (head, int(head) if head.isdigit() else None):
        if k in tree:
            return find(tree[k], rest)
    return []


@dataclass
class Resolved:
    cfg: dict
    dataset: str
    views: list  # (stage, wildcards, view)


def resolve(cfg: dict) -> Resolved:
    (ds,) = cfg["study"]["datasets"]
    views = [(stage, wc, job_view(cfg, stage, d, wc, s)) for stage, d, wc, s in job_settings(cfg)]
    return Resolved(cfg, ds, views)


@lru_cache(maxsize=None)
def paper(name: str) -> Resolved:
    return resolve(load_config(REPO / "configs" / f"{name}.yaml"))


def _concrete(key: tuple, ds: str) -> tuple:
    return tuple(ds if (k == "*" and i == 1 and key[0] == "datasets") else k for i, k in enumerate(key))


def values(r: Resolved, row: Row) -> list[tuple[str, object]]:
    """(where, value) of the row's setting in every job that carries it and in the resolved
    configuration (so that a value no job of this study reads, e.g. an unused network's width, is
    checked too)."""
    key = _concrete(row.key, r.dataset)
    out = []
    for stage, wc, view in r.views:
        if row.ipcs is not None and stage == "condense" and int(wc["ipc"]) not in row.ipcs:
            continue
        where = f"{stage} job " + ",".join(f"{k}={v}" for k, v in wc.items() if k != "temporal")
        out += [(where, x) for x in find(view, key)]
    cfg, ds = r.cfg, r.dataset
    if key[0] == "methods":
        names = [n for n in cfg["methods"] if key[1] in ("*", n)]
        for name in names:
            for ipc in sorted(row.ipcs or cfg["study"]["ipc"]):
                out += [(f"methods.{name} at IPC {ipc}", x)
                        for x in find(method_settings(cfg, ds, name, ipc), key[2:])]
    elif key[0] in ("teacher", "experts", "evaluate"):
        out += [(f"{key[0]} section", x) for x in find(section(cfg, ds, key[0]), key[1:])]
    else:
        out += [("configuration", x) for x in find(cfg, key)]
    return out


def same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return {str(k) for k in a} == {str(k) for k in b} and all(
            same(a[k], {str(kk): vv for kk, vv in b.items()}[str(k)]) for k in a)
    return a == b


def problem(r: Resolved, row: Row) -> str | None:
    """Why the resolved settings disagree with the row, or None."""
    found = values(r, row)
    if not found:
        return f"no job and no configuration key has '{'.'.join(row.key)}'"
    bad = [(w, v) for w, v in found if not same(v, row.value)]
    if bad:
        shown = "; ".join(f"{w}: {json.dumps(v)}" for w, v in bad[:3])
        return (f"documented {json.dumps(row.value)}, resolved {shown}"
                + (f" (and {len(bad) - 3} more jobs)" if len(bad) > 3 else ""))
    return None


def audit(r: Resolved) -> list[str]:
    """Every checked, non-pending row of r's dataset that the resolved settings contradict."""
    return [f"line {row.line} {'.'.join(row.key)}: {msg}" for row in ROWS
            if row.applies(r.dataset) and row.checked and not row.pending and (msg := problem(r, row))]


# ----------------------------------------------------------------------------------- tests

def test_table_is_well_formed():
    assert len(ROWS) > 200
    seen: dict = {}
    for row in ROWS:  # two rows of one setting must not both hold for a dataset and IPC
        for ds in row.datasets:
            earlier = seen.setdefault((row.key, ds), [])
            for other in earlier:
                overlap = other.ipcs is None or row.ipcs is None or other.ipcs & row.ipcs
                assert not overlap, f"line {row.line}: '{'.'.join(row.key)}' for {ds} overlaps line {other.line}"
            earlier.append(row)


CASES = [(ds, row) for ds in DATASETS for row in ROWS if row.applies(ds)]


@pytest.mark.parametrize("ds,row", CASES, ids=[f"{ds}:{'.'.join(r.key)}:{r.line}" for ds, r in CASES])
def test_paper_setting(ds, row):
    r = paper(ds)
    if not row.checked:
        pytest.skip(f"line {row.line}: documentation only (the value is not a setting of the run)")
    if row.pending:
        found = values(r, row)
        now = ("; resolves to " + json.dumps(found[0][1]) + (" as documented: remove the pending tag"
               if all(same(v, row.value) for _, v in found) else "")) if found else "; no such key yet"
        pytest.skip(f"line {row.line}: pending — {'.'.join(row.key)} is being added by another change "
                    f"of issue 11{now}")
    msg = problem(r, row)
    assert msg is None, f"configs/{ds}.yaml, docs/paper-settings.md line {row.line}: {msg}"


def _leaves(tree, prefix=()):
    if isinstance(tree, dict) and tree:
        for k, v in tree.items():
            yield from _leaves(v, prefix + (str(k),))
    else:
        yield prefix


def _covered(key: tuple, ds: str) -> bool:
    for row in ROWS:
        if row.applies(ds) and len(row.key) <= len(key) and all(
                a in ("*", b) for a, b in zip(_concrete(row.key, ds), key)):
            return True
    return False


@pytest.mark.parametrize("ds", DATASETS)
def test_every_setting_documented(ds):
    """Every setting a job of the study receives, and every study / studies / tables setting of the
    config, has a row for this dataset."""
    r = paper(ds)
    keys = {k for _, _, view in r.views for k in _leaves(view)}
    cfg = r.cfg
    keys |= {("study",) + k for k in _leaves(cfg["study"])}
    keys |= {("tables",) + k for k in _leaves(cfg["tables"])}
    keys |= {("studies", t) + k for t in cfg["study"]["tables"] for k in _leaves(cfg["studies"][t])}
    keys |= {(k,) for k in ("results", "logs")}
    for t in cfg["study"]["tables"]:  # methods a study condenses besides the study's own
        for m in cfg["studies"][t].get("methods", []):
            raw = cfg["methods"][m]
            keys |= {("methods", m if m == raw.get("base", m) or k[0] in raw else raw["base"]) + k
                     for k in _leaves(method_settings(cfg, ds, m, 1)) if k != ("base",)}
    missing = sorted(".".join(k) for k in keys if not _covered(k, ds))
    assert not missing, f"configs/{ds}.yaml: settings without a row in docs/paper-settings.md: {missing}"


def _nested(key: tuple, value) -> dict:
    out = value
    for k in reversed(key):
        out = {k: out}
    return out


@pytest.mark.parametrize("ds", ["ucf101", "k400"])
def test_toy_values_fail_the_audit(ds):
    """Inject each value of the toy config.yaml that differs from the paper config into the paper
    config (what `--configfile` merged into config.yaml used to do): each must fail validation or the
    audit."""
    assert not audit(paper(ds))
    base_raw = read_config_file(REPO / "configs" / f"{ds}.yaml")
    base = paper(ds).cfg
    toy = read_config_file(REPO / "config.yaml")
    injected, missed = 0, []
    for sec in ("teacher", "experts", "evaluate", "models", "methods", "study", "threads"):
        for key in _leaves(toy[sec], (sec,)):
            if key[:2] == ("study", "datasets") or (sec == "methods" and key[1] not in base_raw["methods"]):
                continue  # the toy's dataset, or a method the paper config does not define (never run)
            (value,) = find(toy, key)
            try:
                cfg = validate_config(deep_merge(base_raw, _nested(key, copy.deepcopy(value))))
            except ConfigError:
                injected += 1
                continue
            if cfg == base:
                continue  # the toy's value is the paper's
            injected += 1
            if not audit(resolve(cfg)):
                missed.append(f"{'.'.join(key)} = {json.dumps(value)}")
    assert injected > 40
    assert not missed, f"toy values the audit does not catch in configs/{ds}.yaml: {missed}"


def test_snakemake_resolves_a_configfile_alone(tmp_path):
    """`snakemake --configfile configs/ucf101.yaml` (workflow/rules/common.smk, as the Snakefile includes
    it) runs exactly load_config('configs/ucf101.yaml'): the file alone, not merged into config.yaml."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(
        f'include: "{REPO / "workflow" / "rules" / "common.smk"}"\n\n'
        "import json as _json\n"
        'print("VDC-RESOLVED-CONFIG " + _json.dumps(config, sort_keys=True))\n\n'
        "rule noop:\n"
        f'    output: "{tmp_path / "noop.flag"}"\n'
        '    shell: "touch {output}"\n')
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "snakemake"]
    proc = subprocess.run(cmd + ["-s", str(snakefile), "--configfile", "configs/ucf101.yaml", "-n", "--nolock",
                                 "--cores", "1", "noop"], cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("VDC-RESOLVED-CONFIG ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    seen = json.loads(lines[0].split(" ", 1)[1])
    expected = json.loads(json.dumps(load_config("configs/ucf101.yaml"), sort_keys=True))
    assert seen == expected
    assert "toy" not in seen["datasets"] and seen["models"]["minic3d"]["dropout"] == 0.5
