# Expert trajectories for DATM: one job per dataset (vdc/train/experts.py; layout in its docstring).
# Checkpoints per expert go to <workdir>/experts/<dataset>/, so a killed job resumes where it stopped.


rule experts:
    input:
        frames=lambda wc: path("frames", dataset=wc.dataset),
    output:
        path("experts"),
    params:
        code=code_for("experts"),
        settings=settings("experts"),
    log:
        log_file("experts", dataset="{dataset}"),
    benchmark:
        bench_file("experts", dataset="{dataset}")
    threads: lambda wc: config["experts"]["threads"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        f"{GPU_RUN} {VDC} experts --frames {{input.frames}} --out {{output}} "
        f"--settings {{params.settings}} > {{log}} 2>&1"
