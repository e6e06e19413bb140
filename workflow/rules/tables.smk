# The tables stage and the report. One `tables` job per study (vdc/studies.py: the paper's Tables 2-11,
# Figure 4 and the label learning curves) from exactly the evaluation JSONs its cells average; a target
# rule per study (`snakemake table5`, `snakemake figure4`, ...); the paper's numbers side by side
# (`snakemake paper`); the report's figures (`report_sets`, `report_curves`; `snakemake report_figures`).
# `snakemake --report report.html` collects every output marked report() below. Table 8 is printed
# when a run that wrote it succeeds.

import time

WORKFLOW_T0 = time.time()  # onsuccess prints table8.md only if this run wrote it


report: "../report/workflow.rst"


wildcard_constraints:
    study="|".join(STUDIES),


rule tables:
    input:
        unpack(table_inputs),
    output:
        md=os.path.join(path("tables"), "{study}.md"),
        csv=os.path.join(path("tables"), "{study}.csv"),
        tex=os.path.join(path("tables"), "{study}.tex"),
        html=report(os.path.join(path("tables"), "{study}.html"), caption="../report/table.rst", category="Tables",
                    subcategory=_study_kind, labels={"study": "{study}"}),
        png=report(os.path.join(path("tables"), "{study}.png"), caption="../report/table.rst", category="Figures",
                   subcategory=_study_kind, labels={"study": "{study}"}),
    params:
        code=code_for("tables"),
        settings=_tables_settings(),
        caption=study_caption,
        frames=lambda wc, input: " ".join(f"{Path(f).stem}={shlex.quote(f)}" for f in input.frames),
        out=lambda wc, output: os.path.dirname(output.md),
    log:
        log_file("tables", study="{study}"),
    benchmark:
        bench_file("tables", study="{study}")
    threads: 1
    conda:
        CONDA_ENV
    shell:
        f"{VDC} tables --study {{wildcards.study}} --teachers {{input.teachers}} --frames {{params.frames}} "
        f"--out {{params.out}} --settings {{params.settings}} > {{log}} 2>&1"


for _name in STUDIES:

    rule:
        name:
            _name
        input:
            list(table_files(_name).values()),
        default_target: False


rule study_tables:
    """Every study of study.tables."""
    input:
        table_outputs(),


rule paper:
    """The paper's numbers next to this run's, cell by cell (vdc/paper_numbers.yaml)."""
    input:
        evals=study_evals(),
        teachers=study_teachers(),
        frames=[path("frames", dataset=ds) for ds in study_datasets()],
    output:
        md=paper_files()["md"],
        html=report(paper_files()["html"], caption="../report/paper.rst", category="Paper side by side"),
    params:
        code=code_for("tables"),
        settings=_tables_settings(),
        frames=lambda wc, input: " ".join(f"{Path(f).stem}={shlex.quote(f)}" for f in input.frames),
        out=lambda wc, output: os.path.dirname(output.md),
    log:
        log_file("paper"),
    benchmark:
        bench_file("paper")
    threads: 1
    conda:
        CONDA_ENV
    shell:
        f"{VDC} tables --paper --teachers {{input.teachers}} --frames {{params.frames}} --out {{params.out}} "
        f"--settings {{params.settings}} > {{log}} 2>&1"


rule report_sets:
    """A strip, an animated GIF and a page per condensed set; condensed sets side by side per (dataset, IPC)."""
    input:
        condensed=study_condensed(),
        frames=[path("frames", dataset=ds) for ds in study_datasets()],
    output:
        [report(vdc_report.set_outputs(REPORT, c)["html"], caption="../report/sets.rst", category="Condensed sets",
                subcategory=vdc_report.set_key(c)[0], labels=_set_labels(c)) for c in study_condensed()],
        [f for c in study_condensed() for k, f in vdc_report.set_outputs(REPORT, c).items() if k != "html"],
        [report(page, caption="../report/compare.rst", category="Condensed sets", subcategory="side by side",
                labels={"page": Path(page).stem}) for page in vdc_report.compare_groups(REPORT, compare_sets())],
    params:
        code=code_for("report"),
        frames=" ".join(f"{ds}={shlex.quote(path('frames', dataset=ds))}" for ds in study_datasets()),
        intervals=" ".join(f"{ds}={config['datasets'][ds]['clip_interval']}" for ds in study_datasets()),
        compare=" ".join(shlex.quote(c) for c in compare_sets()),
    log:
        log_file("report_sets"),
    benchmark:
        bench_file("report_sets")
    threads: 1
    conda:
        CONDA_ENV
    shell:
        f"{VDC} report sets --condensed {{input.condensed}} --frames {{params.frames}} "
        f"--clip-interval {{params.intervals}} --compare {{params.compare}} --out {REPORT} > {{log}} 2>&1"


rule report_curves:
    """Learning curves: teachers, every evaluation, the condensation histories of EDC / DATM."""
    input:
        teachers=report_teachers(),
        evals=report_evals(),
        histories=distilled_sets(),
    output:
        [report(vdc_report.teacher_curve_output(REPORT, t), caption="../report/curves.rst",
                category="Learning curves", subcategory="teachers", labels=_curve_labels("teachers",
                vdc_report.teacher_curve_output(REPORT, t))) for t in report_teachers()],
        [report(f, caption="../report/curves.rst", category="Learning curves", subcategory="evaluations",
                labels=_curve_labels("evaluations", f)) for f in vdc_report.eval_curve_outputs(REPORT, report_evals())],
        [report(vdc_report.history_output(REPORT, c), caption="../report/curves.rst", category="Learning curves",
                subcategory="condensation", labels=_curve_labels("condense", vdc_report.history_output(REPORT, c)))
         for c in distilled_sets()],
    params:
        code=code_for("report"),
    log:
        log_file("report_curves"),
    benchmark:
        bench_file("report_curves")
    threads: 1
    conda:
        CONDA_ENV
    shell:
        f"{VDC} report curves --teachers {{input.teachers}} --evals {{input.evals}} "
        f"--histories {{input.histories}} --out {REPORT} > {{log}} 2>&1"


rule report_figures:
    """Everything `snakemake --report` shows besides the tables."""
    input:
        report_figures(),


onsuccess:
    _table8 = Path(path("tables")) / "table8.md"
    if _table8.exists() and _table8.stat().st_mtime >= WORKFLOW_T0:  # written by this run
        print(f"\n{_table8.read_text()}")
