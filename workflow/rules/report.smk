# Stage "report": claims with verdicts, results per task, the agreement certificate, theory,
# provenance and citation (hrta.report), as one self-contained HTML file and a Markdown twin
# in <reports>/<report-id>/, where <reports> is the folder beside the results root
# (results -> reports) and the report id is a content hash of the tables, the grid and the
# code version. Since the id is only known once the tables are, the rule's declared outputs
# are a copy of the HTML (for `snakemake --report`) and report.json, which names the folder.

REPORTS = str(Path(config["results"]).parent / "reports")


rule report:
    input:
        grid=f"{OUT}/plan/grid.json",
        tables=final_outputs(),
    output:
        html=report(f"{OUT}/report.html", caption="../report/report.rst", category="Report"),
        index=f"{OUT}/report.json",
    params:
        results=lambda wildcards, input: str(Path(input.grid).parent.parent),
        reports=REPORTS,
    log:
        f"{OUT}/logs/report.log",
    # the figures are drawn in parallel (hrta.report.build.render_figures); the report is
    # the last job, so both cores are free
    threads: 2
    conda:
        str(ENV)
    script:
        "../scripts/report.py"
