# The condense stage: one job per (dataset, method, IPC, temporal setting, seed).
# Inputs besides the frames come from the method's `needs` (common.smk: method_needs): trained
# teachers (teacher_<arch>), EDC statistics (stats_<arch>), DATM experts, an init set (EDC init: rded).


rule condense:
    input:
        unpack(condense_inputs),
    output:
        path("condensed"),
    params:
        code=code_for("condense"),
        settings=settings("condense"),
        extra=condense_args,
    log:
        log_file("condense", dataset="{dataset}", method="{method}", ipc="{ipc}", temporal="{temporal}", seed="{seed}"),
    benchmark:
        bench_file("condense", dataset="{dataset}", method="{method}", ipc="{ipc}", temporal="{temporal}", seed="{seed}")
    threads: config["threads"]["condense"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        f"{GPU_RUN} {VDC} condense --frames {{input.frames}} --out {{output}} {{params.extra}} --threads {{threads}} "
        f"--settings {{params.settings}} > {{log}} 2>&1"


rule condensed:
    """Every condensed set of the study (study.datasets x methods x ipc x seeds)."""
    input:
        study_condensed(),
