# The evaluate stage: one job per (condensed set, student arch, labels, loss, CutMix), under the
# unified protocol (vdc/evaluate.py). The student's seed is the condensed set's seed. Soft and
# Multi-SL labels read the labeler teacher (config evaluate.labeler_arch); hard labels need none.
# Checkpoints go to <workdir>/evaluate/<job hash>/last.pt, so a killed job resumes.
rule evaluate:
    input:
        unpack(eval_labeler),
        condensed=path("condensed"),
        frames=lambda wc: path("frames", dataset=wc.dataset),
    output:
        path("eval"),
    params:
        code=code_for("evaluate"),
        settings=settings("evaluate"),
        labeler=lambda wc, input: f"--labeler {shlex.quote(input.labeler)}" if "labeler" in input.keys() else "",
    log:
        log_file("evaluate", dataset="{dataset}", method="{method}", ipc="{ipc}", temporal="{temporal}",
                 seed="{seed}", arch="{arch}", labels="{labels}", loss="{loss}", cutmix="{cutmix}"),
    benchmark:
        bench_file("evaluate", dataset="{dataset}", method="{method}", ipc="{ipc}", temporal="{temporal}",
                   seed="{seed}", arch="{arch}", labels="{labels}", loss="{loss}", cutmix="{cutmix}")
    threads: config["threads"]["evaluate"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        f"{GPU_RUN} {VDC} evaluate --condensed {{input.condensed}} --frames {{input.frames}} {{params.labeler}} "
        f"--out {{output}} --threads {{threads}} --settings {{params.settings}} > {{log}} 2>&1"


rule evaluations:
    """Every evaluation the tables and Figure 4 need (common.smk: study_evals)."""
    input:
        study_evals(),
