"""Annotation parsers: every supported dataset format to one manifest of videos.

:func:`read_manifest` dispatches on ``settings["dataset"]["format"]`` and returns ``(classes,
records)``: class names in label order (label id = position, 0-based) and one :class:`VideoRecord`
per video of split ``dataset.split`` (train and test), paths relative to ``dataset.video_root``.

Formats (files under ``dataset.annotations``; N = dataset.split):

* ``ucf101`` / ``toy``: ``classInd.txt`` lines ``1 ApplyEyeMakeup`` (1-based ids);
  ``trainlist0N.txt`` lines ``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``;
  ``testlist0N.txt`` lines ``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi`` (class from the folder).
* ``hmdb51``: ``<class>_test_split<N>.txt`` per class, lines ``<video>.avi 1|2|0`` (1 train,
  2 test, 0 unused); class ids = sorted class names; video path ``<class>/<video>``.
* ``ssv2``: ``something-something-v2-labels.json`` ({template without brackets: "id"}),
  ``something-something-v2-train.json`` / ``-validation.json`` (lists of {id, label, template,
  placeholders}; class = template with ``[`` ``]`` removed); video path ``<id>.webm``.
* ``k400``: ``train.csv`` / ``validate.csv`` with columns ``label,youtube_id,time_start,time_end[,split]``;
  classes = sorted unique labels of train.csv; file ``<youtube_id>_<start:06d>_<end:06d>.mp4``
  under ``train/`` and ``val/`` (``k400_layout: flat``, the default) or ``train/<label>/`` and
  ``val/<label>/`` (``k400_layout: by_label``).
* ``list``: ``train.txt`` / ``test.txt`` lines ``relative/path label`` (0-based label, the mmaction
  style) and an optional ``classes.txt`` (one class name per line, in label order).

A malformed line raises :class:`AnnotationError` naming the file, the line number and what was
expected.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from vdc.errors import InputError


class AnnotationError(InputError):
    """An annotation file is missing or malformed; the message names the file, line and fix."""


@dataclass(frozen=True)
class VideoRecord:
    path: str        # relative to the dataset's video_root
    label: int       # 0-based class id
    class_name: str
    split: str       # "train" or "test"


def _lines(path: Path):
    """(line number, stripped text) of the non-empty lines of an annotation file."""
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found (check dataset.annotations and dataset.split)")
    with open(path, encoding="utf-8-sig") as fh:
        for no, line in enumerate(fh, 1):
            line = line.strip()
            if line:
                yield no, line


def _bad(path: Path, no: int, expected: str, got: str) -> AnnotationError:
    return AnnotationError(f"{path}:{no}: expected {expected}, got '{got}'")


# ------------------------------------------------------------------------------------ UCF101 / toy

def read_ucf101(annotations: str | Path, split: int):
    ann = Path(annotations)
    classes: list[str] = []
    f = ann / "classInd.txt"
    for no, line in _lines(f):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(classes) + 1:
            raise _bad(f, no, f"'<id> <ClassName>' with ids 1, 2, ... in order (here {len(classes) + 1})", line)
        classes.append(parts[1])
    if not classes:
        raise AnnotationError(f"{f}: no classes")
    lookup = {c.lower(): i for i, c in enumerate(classes)}  # UCF101 itself mixes HandstandPushups / HandStand...

    def class_of(f, no, rel, line):
        folder = rel.split("/")[0] if "/" in rel else None
        if folder is None or folder.lower() not in lookup:
            raise _bad(f, no, "'<ClassName>/<video>' with a ClassName from classInd.txt", line)
        return lookup[folder.lower()]

    records = []
    f = ann / f"trainlist{split:02d}.txt"
    for no, line in _lines(f):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise _bad(f, no, "'<ClassName>/<video> <label 1-based>'", line)
        label = int(parts[1]) - 1
        if class_of(f, no, parts[0], line) != label:
            raise _bad(f, no, f"a label matching the folder (classInd says {parts[0].split('/')[0]} is "
                       f"{lookup[parts[0].split('/')[0].lower()] + 1})", line)
        records.append(VideoRecord(parts[0], label, classes[label], "train"))
    f = ann / f"testlist{split:02d}.txt"
    for no, line in _lines(f):
        parts = line.split()
        if len(parts) not in (1, 2):
            raise _bad(f, no, "'<ClassName>/<video>'", line)
        label = class_of(f, no, parts[0], line)
        records.append(VideoRecord(parts[0], label, classes[label], "test"))
    return classes, records


# ------------------------------------------------------------------------------------ HMDB51

_HMDB_RE = re.compile(r"^(.+)_test_split([0-9])\.txt$")


def read_hmdb51(annotations: str | Path, split: int):
    ann = Path(annotations)
    if not ann.is_dir():
        raise AnnotationError(f"{ann}: not a folder; dataset.annotations must be the testTrainMulti_7030_splits folder")
    files = {}
    for p in ann.iterdir():
        m = _HMDB_RE.match(p.name)
        if m and int(m.group(2)) == split:
            files[m.group(1)] = p
    if not files:
        raise AnnotationError(f"{ann}: no '<class>_test_split{split}.txt' files")
    classes = sorted(files)
    records = []
    for label, name in enumerate(classes):
        f = files[name]
        for no, line in _lines(f):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise _bad(f, no, "'<video>.avi <0|1|2>' (1 train, 2 test, 0 unused)", line)
            if parts[1] != "0":
                records.append(VideoRecord(f"{name}/{parts[0]}", label, name, "train" if parts[1] == "1" else "test"))
    records.sort(key=lambda r: r.split != "train")  # stable: train first, each in class order
    return classes, records


# ------------------------------------------------------------------------------------ SSv2

def _load_json(path: Path):
    if not path.is_file():
        raise AnnotationError(f"{path}: annotation file not found (check dataset.annotations)")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise AnnotationError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None


def read_ssv2(annotations: str | Path, split: int):
    ann = Path(annotations)
    if split != 1:
        raise AnnotationError(f"dataset.split = {split}: Something-Something v2 has one split (train/validation); set split: 1")
    f = ann / "something-something-v2-labels.json"
    table = _load_json(f)
    if not isinstance(table, dict):
        raise AnnotationError(f"{f}: expected a JSON object {{template: \"id\"}}")
    try:
        by_id = sorted((int(v), k) for k, v in table.items())
    except (TypeError, ValueError):
        raise AnnotationError(f"{f}: expected string ids (\"0\", \"1\", ...) as values") from None
    if [i for i, _ in by_id] != list(range(len(by_id))):
        raise AnnotationError(f"{f}: ids must be 0..{len(by_id) - 1} without gaps")
    classes = [k for _, k in by_id]
    lookup = {k: i for i, k in enumerate(classes)}
    records = []
    for split_name, fname in (("train", "something-something-v2-train.json"),
                              ("test", "something-something-v2-validation.json")):
        f = ann / fname
        items = _load_json(f)
        if not isinstance(items, list):
            raise AnnotationError(f"{f}: expected a JSON list of {{id, label, template, placeholders}}")
        for no, it in enumerate(items, 1):
            if not isinstance(it, dict) or "id" not in it or "template" not in it:
                raise AnnotationError(f"{f}: entry {no}: expected an object with 'id' and 'template', got {str(it)[:80]}")
            name = it["template"].replace("[", "").replace("]", "")
            if name not in lookup:
                raise AnnotationError(f"{f}: entry {no} (id {it['id']}): template '{name}' is not in {ann / 'something-something-v2-labels.json'}")
            records.append(VideoRecord(f"{it['id']}.webm", lookup[name], name, split_name))
    return classes, records


# ------------------------------------------------------------------------------------ Kinetics-400

K400_SPLIT_DIRS = {"train": "train", "test": "val"}


def read_k400(annotations: str | Path, split: int, layout: str):
    ann = Path(annotations)
    if split != 1:
        raise AnnotationError(f"dataset.split = {split}: Kinetics-400 has one split (train/validate); set split: 1")
    if layout not in ("flat", "by_label"):
        raise AnnotationError(f"k400_layout '{layout}': expected flat or by_label")
    rows = {}
    for split_name, fname in (("train", "train.csv"), ("test", "validate.csv")):
        f = ann / fname
        if not f.is_file():
            raise AnnotationError(f"{f}: annotation file not found (check dataset.annotations)")
        out = []
        with open(f, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            need = ("label", "youtube_id", "time_start", "time_end")
            if header is None or any(c not in header for c in need):
                raise AnnotationError(f"{f}:1: expected a header with columns {','.join(need)}, got '{','.join(header or [])}'")
            col = {c: header.index(c) for c in need}
            for no, row in enumerate(reader, 2):
                if not row:
                    continue
                try:
                    label = row[col["label"]]
                    yid = row[col["youtube_id"]]
                    start, end = int(float(row[col["time_start"]])), int(float(row[col["time_end"]]))
                except (IndexError, ValueError):
                    raise _bad(f, no, "'label,youtube_id,time_start,time_end,...' with integer times", ",".join(row)) from None
                if not label or not yid:
                    raise _bad(f, no, "a non-empty label and youtube_id", ",".join(row))
                out.append((label, f"{yid}_{start:06d}_{end:06d}.mp4"))
        rows[split_name] = out
    classes = sorted({label for label, _ in rows["train"]})
    lookup = {c: i for i, c in enumerate(classes)}
    records = []
    for split_name, out in rows.items():
        for label, name in out:
            if label not in lookup:
                raise AnnotationError(f"{ann / 'validate.csv'}: label '{label}' does not occur in train.csv")
            sub = K400_SPLIT_DIRS[split_name]
            rel = f"{sub}/{label}/{name}" if layout == "by_label" else f"{sub}/{name}"
            records.append(VideoRecord(rel, lookup[label], label, split_name))
    return classes, records


# ------------------------------------------------------------------------------------ generic list

def read_list(annotations: str | Path, split: int):
    ann = Path(annotations)
    parsed = {}
    for split_name in ("train", "test"):
        f = ann / f"{split_name}.txt"
        out = []
        for no, line in _lines(f):
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].isdigit():
                raise _bad(f, no, "'<relative/path> <label 0-based>'", line)
            out.append((parts[0], int(parts[1])))
        parsed[split_name] = out
    f = ann / "classes.txt"
    k = 1 + max((lab for rows in parsed.values() for _, lab in rows), default=-1)
    if f.is_file():
        classes = [line for _, line in _lines(f)]
        if len(classes) < k:
            raise AnnotationError(f"{f}: {len(classes)} class names but labels go up to {k - 1}")
    else:
        classes = [f"class_{i:03d}" for i in range(k)]
    records = [VideoRecord(p, lab, classes[lab], s) for s, rows in parsed.items() for p, lab in rows]
    return classes, records


# ------------------------------------------------------------------------------------ dispatch

READERS = {"ucf101": read_ucf101, "toy": read_ucf101, "hmdb51": read_hmdb51, "ssv2": read_ssv2,
           "k400": read_k400, "list": read_list}


def read_manifest(dataset: dict):
    """(classes, records) of a dataset settings dict (``settings["dataset"]``, with the schema's
    defaults filled: split, k400_layout): records of the configured split, train records first then
    test, each in annotation-file order."""
    fmt = dataset["format"]
    if fmt not in READERS:
        raise AnnotationError(f"dataset.format '{fmt}': expected one of {', '.join(READERS)}")
    kw = {"layout": dataset["k400_layout"]} if fmt == "k400" else {}
    classes, records = READERS[fmt](dataset["annotations"], int(dataset["split"]), **kw)
    records = [r for r in records if r.split == "train"] + [r for r in records if r.split == "test"]
    return classes, records


def annotation_files(dataset: dict) -> list[str]:
    """The annotation files (or, for hmdb51, the folder) the manifest is read from: the extract
    rule's inputs."""
    ann = Path(dataset["annotations"])
    n = int(dataset["split"])
    fmt = dataset["format"]
    if fmt in ("ucf101", "toy"):
        names = ["classInd.txt", f"trainlist{n:02d}.txt", f"testlist{n:02d}.txt"]
    elif fmt == "hmdb51":
        return [str(ann)]
    elif fmt == "ssv2":
        names = [f"something-something-v2-{s}.json" for s in ("labels", "train", "validation")]
    elif fmt == "k400":
        names = ["train.csv", "validate.csv"]
    elif fmt == "list":
        names = ["train.txt", "test.txt"] + (["classes.txt"] if (ann / "classes.txt").exists() else [])
    else:
        raise AnnotationError(f"dataset.format '{fmt}': expected one of {', '.join(READERS)}")
    return [str(ann / x) for x in names]


# ------------------------------------------------------------------------------------ split checks

def check_splits(dataset: dict, classes: list[str], records: list[VideoRecord]) -> list[str]:
    """The split sanity rule (docs/data.md, "Split checks"); returns the warnings, raises on errors.

    * an empty train or test split: error;
    * a class without training videos: error (K is the number of classes; every per-class method,
      and the IPC of every class, needs them);
    * a path listed twice in one split, or in both train and test: error, or a warning with
      ``dataset.split_checks: warn`` (the videos are then kept as listed);
    * a class without test videos: warning (its accuracy is simply not measured).

    Errors are :class:`AnnotationError` naming the annotation files."""
    files = ", ".join(annotation_files(dataset))
    name = dataset["name"]
    by_split = {s: [r for r in records if r.split == s] for s in ("train", "test")}
    for split, rows in by_split.items():
        if not rows:
            raise AnnotationError(f"dataset '{name}': the {split} split lists no videos (read from {files}); "
                                  f"check dataset.annotations and dataset.split")
    per_class = {s: [0] * len(classes) for s in by_split}
    for r in records:
        per_class[r.split][r.label] += 1
    empty = [classes[k] for k, n in enumerate(per_class["train"]) if n == 0]
    if empty:
        raise AnnotationError(f"dataset '{name}': {len(empty)} of {len(classes)} classes have no training video "
                              f"({', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''}; read from {files}); "
                              f"every class needs training videos: fix the lists or remove the class")
    problems = []
    for split, rows in by_split.items():
        seen: dict[str, int] = {}
        for r in rows:
            seen[r.path] = seen.get(r.path, 0) + 1
        dups = [p for p, n in seen.items() if n > 1]
        if dups:
            problems.append(f"{len(dups)} video(s) listed more than once in the {split} split (e.g. {dups[0]})")
    overlap = sorted({r.path for r in by_split["train"]} & {r.path for r in by_split["test"]})
    if overlap:
        problems.append(f"{len(overlap)} video(s) listed in both the train and the test split (e.g. {overlap[0]})")
    if problems and dataset["split_checks"] == "strict":
        raise AnnotationError(f"dataset '{name}': {'; '.join(problems)} (read from {files}); fix the lists, or set "
                              f"datasets.{name}.split_checks: warn to keep them as listed")
    untested = [classes[k] for k, n in enumerate(per_class["test"]) if n == 0]
    if untested:
        problems.append(f"{len(untested)} class(es) have no test video ({', '.join(untested[:5])})")
    return problems
