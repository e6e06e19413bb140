# Data rules: the generated toy dataset (format: toy) and frame extraction into one HDF5 per dataset.
# Stage code: vdc/data/toy.py, vdc/data/ingest.py, vdc/data/extract.py. User docs: docs/data.md.
import re

from vdc.data.ingest import annotation_files
from vdc.data.toy import toy_roots

try:
    TOY_ROOTS = toy_roots(config)  # {toy root folder: dataset name} for datasets with format toy
except ValueError as _err:
    raise WorkflowError(str(_err)) from None

# Shell commands below are f-strings so that the interpreter (VDC) is part of the command, not a
# param (a param would rerun every job when the venv moves) and not a global the linter flags;
# Snakemake's own placeholders are therefore written with double braces.

if TOY_ROOTS:

    rule toy_dataset:
        output:
            PATHS["toy_done"],
            "{root}/ucfTrainTestlist/trainlist01.txt",
            "{root}/ucfTrainTestlist/testlist01.txt",
        params:
            code=code_for("toy"),
            settings=lambda wc: shlex.quote(settings_json(stage_settings(config, "toy", TOY_ROOTS[wc.root]))),
        threads: config["threads"]["toy"]
        log:
            log_file("toy_dataset", root="{root}"),
        benchmark:
            bench_file("toy_dataset", root="{root}")
        conda:
            CONDA_ENV
        wildcard_constraints:
            root="|".join(re.escape(r) for r in TOY_ROOTS),
        shell:
            f"{VDC} toy --out {{wildcards.root}} --threads {{threads}} --settings {{params.settings}} > {{log}} 2>&1"


rule extract:
    input:
        lambda wc: annotation_files(config["datasets"][wc.dataset]),
    output:
        frames=path("frames"),
        report=path("frames_report"),
    params:
        code=code_for("extract"),
        settings=settings("extract"),
    threads: config["threads"]["extract"]
    log:
        log_file("extract", dataset="{dataset}"),
    benchmark:
        bench_file("extract", dataset="{dataset}")
    conda:
        CONDA_ENV
    shell:
        f"{VDC} extract --out {{output.frames}} --report {{output.report}} --threads {{threads}}"
        f" --settings {{params.settings}} > {{log}} 2>&1"


rule frames:
    input:
        [path("frames", dataset=ds) for ds in STUDY["datasets"]],
