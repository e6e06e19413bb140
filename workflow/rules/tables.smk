# The tables stage: Tables 7 (when study.edc_networks is set), 8, 9, 11 and Figure 4 from every
# evaluation JSON the study requests (study_evals), the teachers' metrics (Full-dataset row) and the
# frames files (Ratio row). The default target; table8.md is printed when a run succeeds.

import time

TABLE_KEYS = ("study", "datasets", "evaluate", "methods", "tables", "teacher")  # what the tables read


def table_outputs():
    names = ["table8", "table9", "table11"] + (["table7"] if STUDY.get("edc_networks") else [])
    out = {f"{n}_{ext}": f"{tables_dir()}/{n}.{ext}" for n in names for ext in ("md", "csv")}
    out.update(figure4=f"{tables_dir()}/figure4.png", figure4_csv=f"{tables_dir()}/figure4.csv")
    return out


rule tables:
    input:
        evals=study_evals(),
        teachers=study_teachers(),
        frames=[frames_file(ds) for ds in STUDY["datasets"]],
    output:
        **table_outputs(),
    params:
        code=code_for("tables"),
        settings=shlex.quote(settings_json({k: config[k] for k in TABLE_KEYS if k in config})),
        frames=" ".join(f"{ds}={shlex.quote(frames_file(ds))}" for ds in STUDY["datasets"]),
        evals_root=f"{RESULTS}/eval",
        out=tables_dir(),
    log:
        log_file("tables"),
    benchmark:
        bench_file("tables")
    threads: 1
    conda:
        CONDA_ENV
    shell:
        "{VDC} tables --evals-root {params.evals_root} --teachers {input.teachers} --frames {params.frames} "
        "--out {params.out} --settings {params.settings} > {log} 2>&1"


_TABLES_T0 = time.time()


onsuccess:
    _table8 = Path(tables_dir()) / "table8.md"
    if _table8.exists() and _table8.stat().st_mtime >= _TABLES_T0:  # written by this run
        print("\n" + _table8.read_text())
