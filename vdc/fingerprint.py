"""Code fingerprints for code-aware reruns.

Snakemake reruns a job when its params change, but it does not look inside the Python package a
job imports. So every rule passes a fingerprint of the vdc code it runs as a param
(``params: code=code_for("condense")`` in workflow/rules/common.smk, which calls
:func:`stage_code_roots` and :func:`code_version`).

The fingerprint of a job hashes the source files of the stage module (vdc/__main__.py's STAGES), of
the modules its settings pick at run time (the condensation method's module, the networks' modules)
and of every vdc module those import, followed statically through ``import`` statements (also
inside functions). Editing vdc/condense/rded.py therefore changes the params of the RDED condense
jobs only; Snakemake reruns them and, because their outputs change, everything downstream of them.
Comments, blank lines, formatting and docstrings are not part of the fingerprint (it hashes the
syntax tree), so documentation edits rerun nothing. Nothing here imports torch.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import vdc
from vdc.__main__ import STAGES
from vdc.config import stage_settings

VDC_PACKAGE = Path(vdc.__file__).resolve().parent

# Modules that carry no computation of their own: the CLI and config plumbing (their effect on a job
# reaches it through the `settings` param already: a changed default changes the settings), this
# fingerprinting, progress lines and the job server. Editing them reruns nothing.
CODE_PLUMBING = {"vdc", "vdc.__main__", "vdc.cli", "vdc.config", "vdc.fingerprint", "vdc.progress", "vdc.jobserver"}


def _module_file(name):
    """Source file of module `name` without importing it, or None when there is none."""
    top, _, rest = name.partition(".")
    if top == "vdc":
        base = VDC_PACKAGE.joinpath(*rest.split(".")) if rest else VDC_PACKAGE
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _is_package(path):
    return path.name == "__init__.py"


def _memo(kind, data, compute):
    """``compute()`` memoised by the SHA-1 of ``data`` (a source file's bytes) in the user's cache folder
    (``$XDG_CACHE_HOME/vdc/code``, else ``~/.cache/vdc/code``): parsing every module a job imports costs
    ~0.5 s per job otherwise. A pure function of the bytes, so a cached value is never stale; a folder
    that cannot be written just means computing it."""
    key = hashlib.sha1(data).hexdigest()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vdc" / "code"
    cached = root / f"{kind}-{key}.json"
    try:
        return json.loads(cached.read_text())
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.{os.getpid()}")
        tmp.write_text(json.dumps(value))
        os.replace(tmp, cached)
    except OSError:
        pass
    return value


def _imported_modules(name, path):
    """Every module that `name` (source `path`) imports anywhere in its code, as absolute names."""
    data = path.read_bytes()
    return set(_memo(f"imports-{name}", data, lambda: sorted(_parse_imports(name, path, data))))


def _parse_imports(name, path, data):
    package = name if _is_package(path) else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(data, str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            found.add(base)
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _with_parents(name):
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@functools.lru_cache(maxsize=None)
def code_modules(roots):
    """The closure of `roots` (a tuple of module names) over their imports within their own top-level
    packages, as sorted (module name, file) pairs; CLI/config plumbing left out."""
    packages = {r.partition(".")[0] for r in roots}
    for root in roots:
        if _module_file(root) is None:
            raise ValueError(f"code_for: no source file for module '{root}' "
                                f"(is the stage or method module missing?)")
    seen = {}
    todo = [p for r in roots for p in _with_parents(r)]
    while todo:
        name = todo.pop()
        if name in seen or name.partition(".")[0] not in packages:
            continue
        path = _module_file(name)
        if path is None:      # `from pkg import attribute`, or an optional import that is absent
            continue
        seen[name] = path
        for imported in _imported_modules(name, path):
            todo.extend(_with_parents(imported))
    return tuple(sorted((n, p) for n, p in seen.items() if n not in CODE_PLUMBING))


def _strip_docstrings(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=None)
def source_digest(path):
    """Hash of a Python file's syntax tree: code edits change it, comments/formatting/docstrings don't."""
    data = Path(path).read_bytes()

    def digest():
        tree = _strip_docstrings(ast.parse(data, str(path)))
        return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()

    return _memo("digest", data, digest)


@functools.lru_cache(maxsize=None)
def code_version(*roots):
    """Fingerprint of the code of modules `roots` and everything they import (16 hex digits)."""
    h = hashlib.sha256()
    for name, path in code_modules(tuple(sorted(set(roots)))):
        h.update(f"{name} {source_digest(path)}\n".encode())
    return h.hexdigest()[:16]


def _model_modules():
    """vdc.models._MODULES (network name -> module), read from the source: importing vdc.models
    would import torch into every Snakemake run."""
    path = _module_file("vdc.models")
    for node in ast.parse(path.read_bytes()).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "_MODULES" for t in targets):
                return ast.literal_eval(node.value)
    raise ValueError(f"code_for: {path} has no literal _MODULES table of network modules")


# Stages whose settings name the networks (and, for condense, the method) they run.
STAGES_WITH_NETWORKS = {"teacher", "experts", "stats", "condense", "evaluate"}


def job_code_roots(stage, settings):
    """The modules one job of `stage` with `settings` (vdc.config.stage_settings) runs: the stage
    module, the networks it builds and, for condense, the method's module."""
    roots = {STAGES[stage][0]}
    if stage not in STAGES_WITH_NETWORKS:
        return tuple(roots)
    archs = {settings.get("arch"), settings.get("labeler_arch"), *settings.get("models", {})}
    if stage == "condense":
        method = settings["settings"]
        roots.add(method.get("module") or f"vdc.condense.{method['base']}")
        if "experts" in method.get("needs", []):
            archs.add(settings["experts_arch"])
    models = _model_modules()
    roots.update(models[a] for a in archs if a in models)
    return tuple(sorted(roots))


def stage_code_roots(config, stage, wc):
    """job_code_roots for the job of `stage` with wildcards `wc` under `config` (common.smk's code_for)."""
    wc = dict(wc)
    if stage not in STAGES_WITH_NETWORKS:
        return (STAGES[stage][0],)
    return job_code_roots(stage, stage_settings(config, stage, wc.pop("dataset"), **wc))


def job_code(stage, settings):
    """The code fingerprint of one job, computed by the job itself: equal to the `params.code` its
    Snakemake rule passes (resumable checkpoints are tied to it, vdc/resume.py)."""
    return code_version(*job_code_roots(stage, settings))
