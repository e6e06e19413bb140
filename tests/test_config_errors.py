"""Config mistakes are caught before any job runs, each as a one-line message naming the key.

The mistakes a hostile user made (issue 12): typos under methods / method_overrides / stage_overrides,
wrong types there, a reversed crop scale, an unknown base method, late epochs or milestones beyond the
run, an unknown model section. Then a fuzz test: unknown keys and wrong types at every level of the
schema, generated from the schema itself, must each end in a ConfigError — never a traceback of
another kind, never silent acceptance.
"""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vdc.config import SCHEMA_PATH, ConfigError, load_schema, validate_config
from vdc.settings import job_settings

ROOT = Path(__file__).resolve().parents[1]


def raw_default() -> dict:
    """config.yaml as written (before defaults), with one method variant and per-dataset overrides, so
    that every level of the schema is present."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["datasets"]["toy"]["method_overrides"] = {"rded": {"mipc": 12, "ipc": {5: {"mipc": 14}}}}
    cfg["datasets"]["toy"]["stage_overrides"] = {"evaluate": {"epochs": 64}, "teacher": {"epochs": 34},
                                                 "experts": {"epochs": 4}}
    return cfg


def check(cfg: dict) -> None:
    """What `snakemake -n` does with a config: validate it, then resolve every job's settings."""
    validate_config(cfg, "config")
    for _ in job_settings(cfg):
        pass


def test_the_default_configs_resolve_every_job():
    check(raw_default())
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        from vdc.config import load_config
        for _ in job_settings(load_config(path)):
            pass


MISTAKES = [
    # (where, mutation, words that must be in the message)
    ("typo in stage_overrides", lambda c: c["datasets"]["toy"]["stage_overrides"]["evaluate"].update(epoch=5),
     ["datasets.toy.stage_overrides.evaluate", "'epoch'", "did you mean 'epochs'"]),
    ("typo under methods", lambda c: c["methods"]["rded"].update(mpic=20),
     ["methods.rded", "'mpic'", "did you mean 'mipc'"]),
    ("typo in method_overrides", lambda c: c["datasets"]["toy"]["method_overrides"]["rded"].update(clip_per_video=3),
     ["datasets.toy.method_overrides.rded", "'clip_per_video'"]),
    ("typo in a per-IPC override", lambda c: c["datasets"]["toy"]["method_overrides"]["rded"]["ipc"][5].update(mipcc=3),
     ["datasets.toy.method_overrides.rded.ipc.5", "'mipcc'"]),
    ("wrong type in method_overrides", lambda c: c["datasets"]["toy"]["method_overrides"]["rded"].update(mipc="70"),
     ["datasets.toy.method_overrides.rded.mipc", "not of type 'integer'"]),
    ("wrong type in stage_overrides", lambda c: c["datasets"]["toy"]["stage_overrides"]["teacher"].update(lr="fast"),
     ["datasets.toy.stage_overrides.teacher.lr"]),
    ("reversed crop scale", lambda c: c["methods"]["rded"].update(scale=[1.0, 0.3]),
     ["methods.rded", "scale", "[1.0, 0.3]"]),
    ("reversed evaluation crop", lambda c: c["evaluate"].update(scale=[1.0, 0.3]), ["evaluate.scale"]),
    ("unknown base method", lambda c: c["methods"].update(edc_x={"base": "edcc"}),
     ["methods.edc_x.base", "'edcc' is not a method"]),
    ("a variant with a bad key", lambda c: c["methods"].update(edc_y={"base": "edc", "iters": 3}),
     ["methods.edc_y", "'iters'", "did you mean 'iterations'"]),
    ("late epochs beyond the run", lambda c: c["evaluate"].update(late_epochs=[14, 75]),
     ["evaluate.late_epochs", "[75]"]),
    ("milestone beyond the run", lambda c: c["teacher"].update(milestones=[500]), ["teacher.milestones", "[500]"]),
    ("unknown model section", lambda c: c["models"].update(c3d={"width": 0.5}), ["models", "'c3d'"]),
    ("unknown dataset key", lambda c: c["datasets"]["toy"].update(input_sizes=48), ["datasets.toy", "'input_sizes'"]),
    ("toy block on a real dataset", lambda c: c["datasets"]["toy"].update(format="ucf101"), ["datasets.toy.toy"]),
    ("DATM window beyond the experts", lambda c: c["methods"]["datm"].update(max_start_epoch=9),
     ["methods.datm", "max_start_epoch + expert_epochs"]),
    ("undefined study method", lambda c: c["study"].update(methods=["random", "rdde"]), ["study.methods", "'rdde'"]),
]


@pytest.mark.parametrize("name,mutate,words", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_gets_a_one_line_message_naming_the_key(name, mutate, words):
    cfg = raw_default()
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        check(cfg)
    lines = [line for line in str(err.value).splitlines() if all(w in line for w in words)]
    assert lines, f"no line of the error names {words}:\n{err.value}"


def test_snakemake_dry_run_reports_the_mistake_without_a_stage_traceback(tmp_path):
    cfg = raw_default()
    cfg["datasets"]["toy"]["stage_overrides"]["evaluate"]["epoch"] = 5
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path),
                          "--configfile", str(tmp_path / "bad.yaml"), "-n"], capture_output=True, text=True)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "datasets.toy.stage_overrides.evaluate: unknown key 'epoch' (did you mean 'epochs'?)" in out


# ----------------------------------------------------------------------------- fuzz

WRONG = {"integer": "seven", "number": "fast", "string": 12345, "boolean": "yes", "array": 5, "object": [1, 2],
         "null": "x"}


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["definitions"][node["$ref"].split("/")[-1]]
    return node


def mutation_points(schema: dict, instance, node: dict, path: tuple = ()):
    """(path, kind, value) mutations: an unknown key in every object the instance has, and a wrong-typed
    value for every key of a known type."""
    node = _resolve(schema, node)
    if not isinstance(instance, dict):
        return
    yield path, "unknown key", ("zz_unknown_key", 1)
    props = node.get("properties", {})
    extra = node.get("additionalProperties")
    for key, value in instance.items():
        sub = props.get(key) or (extra if isinstance(extra, dict) else None)
        if sub is None:
            continue
        sub = _resolve(schema, sub)
        types = sub.get("type")
        if isinstance(types, str) and types in WRONG:
            yield path + (key,), "wrong type", WRONG[types]
        elif isinstance(types, list):
            candidates = [("string", "seven"), ("array", [1]), ("object", {"a": 1}), ("boolean", True)]
            wrong = next((v for t, v in candidates if t not in types), None)
            if wrong is not None:
                yield path + (key,), "wrong type", wrong
        yield from mutation_points(schema, value, sub, path + (key,))


def overrides_points(cfg: dict):
    """The levels the schema leaves open (method variants, per-dataset overrides), mutated the same way."""
    for key, wrong in (("iterations", "many"), ("lr", "x"), ("zz_unknown_key", 1)):
        yield ("methods", "edc_i3d", key), "variant", wrong
    for key, wrong in (("mipc", "many"), ("scale", 3), ("zz_unknown_key", 1)):
        yield ("datasets", "toy", "method_overrides", "rded", key), "method override", wrong
        yield ("datasets", "toy", "method_overrides", "rded", "ipc", 5, key), "per-IPC override", wrong
    for sec in ("teacher", "experts", "evaluate"):
        for key, wrong in (("epochs", "many"), ("batch", [1]), ("zz_unknown_key", 1)):
            yield ("datasets", "toy", "stage_overrides", sec, key), "stage override", wrong


def apply(raw: dict, path: tuple, kind: str, value) -> dict:
    """The user's file ``raw`` with one mutation (missing sections on the way are created)."""
    cfg = copy.deepcopy(raw)
    node = cfg
    if kind == "unknown key":
        for p in path:
            node = node.setdefault(p, {})
        node[value[0]] = value[1]
        return cfg
    for p in path[:-1]:
        node = node.setdefault(p, {})
    node[path[-1]] = value
    return cfg


def test_fuzz_unknown_keys_and_wrong_types_at_every_level():
    schema = load_schema()
    base = raw_default()
    filled = validate_config(copy.deepcopy(base))
    filled["methods"]["edc_i3d"] = copy.deepcopy(base["methods"]["edc_i3d"])  # variants as written
    cases = list(mutation_points(schema, filled, schema)) + list(overrides_points(filled))
    assert len(cases) >= 100, len(cases)
    tracebacks, accepted = [], []
    for path, kind, value in cases:
        cfg = apply(base, path, kind, value)
        try:
            check(cfg)
            accepted.append((path, kind, value))
        except ConfigError as exc:
            assert str(exc).count("\n") <= 13, str(exc)   # a short list of one-line messages
        except Exception as exc:  # noqa: BLE001 - what this test counts
            tracebacks.append((path, kind, value, f"{type(exc).__name__}: {exc}"))
    report = f"{len(cases)} cases, {len(tracebacks)} tracebacks, {len(accepted)} silent acceptances"
    print(report)
    assert not tracebacks, f"{report}\n" + "\n".join(map(str, tracebacks[:10]))
    assert not accepted, f"{report}\n" + "\n".join(map(str, accepted[:10]))
