# The tables stage: Tables 7 (when study.edc_networks is set), 8, 9, 11 and Figure 4 from every
# evaluation JSON the study requests (study_evals), the teachers' metrics (Full-dataset row) and the
# frames files (Ratio row). The default target; table8.md is printed when a run succeeds.

import time

TABLE_KEYS = ("study", "datasets", "evaluate", "methods", "tables", "teacher", "results")  # what the tables read
WORKFLOW_T0 = time.time()  # onsuccess prints table8.md only if this run wrote it


rule tables:
    input:
        evals=study_evals(),
        teachers=study_teachers(),
        frames=[path("frames", dataset=ds) for ds in STUDY["datasets"]],
    output:
        **table_outputs(),
    params:
        code=code_for("tables"),
        settings=shlex.quote(settings_json({k: config[k] for k in TABLE_KEYS if k in config})),
        frames=" ".join(f"{ds}={shlex.quote(path('frames', dataset=ds))}" for ds in STUDY["datasets"]),
        out=lambda wc, output: os.path.dirname(output.table8_md),
    log:
        log_file("tables"),
    benchmark:
        bench_file("tables")
    threads: 1
    conda:
        CONDA_ENV
    shell:
        f"{VDC} tables --teachers {{input.teachers}} --frames {{params.frames}} "
        f"--out {{params.out}} --settings {{params.settings}} > {{log}} 2>&1"


onsuccess:
    _table8 = Path(path("tables")) / "table8.md"
    if _table8.exists() and _table8.stat().st_mtime >= WORKFLOW_T0:  # written by this run
        print(f"\n{_table8.read_text()}")
