# Stage "aggregate": one tidy table of every run and one of every logged step (hrta.aggregate).


rule aggregate:
    input:
        grid=str(GRID_FILE),
        plans=[f"{OUT}/plan/tune.json", f"{OUT}/plan/eval.json"],
        manifests=manifests("tune") + manifests("eval"),
    output:
        results=report(f"{OUT}/results.parquet", caption="../report/results.rst",
                       category="Results"),
        histories=report(f"{OUT}/histories.parquet", caption="../report/histories.rst",
                         category="Results"),
        skipped=f"{OUT}/skipped.json",
    params:
        name=GRID.name,
        missing_backends=MISSING,
    log:
        f"{OUT}/logs/aggregate.log",
    conda:
        str(ENV)
    script:
        "../scripts/aggregate.py"
