# The teacher stage: one network per (dataset, arch) trained on the full training split with the
# reference recipe (vdc/train/teacher.py). Its .json is the tables' "Full dataset" row; its .pt is the
# labeler (soft / Multi-SL), RDED's observer, Herding's feature model and EDC's statistics source.
# Per-epoch checkpoints go to <workdir>/teacher/<job>/last.pt, so a killed job resumes. A network given in
# the config (datasets.<name>.teachers.<arch>) is checked and tested instead of training one.


rule teacher:
    input:
        unpack(given_teacher),
        frames=lambda wc: path("frames", dataset=wc.dataset),
    output:
        model=path("teacher"),
        metrics=path("teacher_metrics"),
    params:
        code=code_for("teacher"),
        settings=settings("teacher"),
    log:
        log_file("teacher", dataset="{dataset}", arch="{arch}"),
    benchmark:
        bench_file("teacher", dataset="{dataset}", arch="{arch}")
    threads: config["threads"]["teacher"]
    resources:
        gpu=GPU,
    conda:
        CONDA_ENV
    shell:
        f"{GPU_RUN} {VDC} teacher --frames {{input.frames}} --out {{output.model}} --metrics {{output.metrics}} "
        f"--threads {{threads}} --settings {{params.settings}} > {{log}} 2>&1"


rule teachers:
    """The teacher (config teacher.arch) of every study dataset."""
    input:
        study_teachers(),
