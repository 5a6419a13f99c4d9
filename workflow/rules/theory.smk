# Stage "theory": the closed-form NTK spectrum against s, the empirical NTK of each backend
# against the closed form as the width grows, and predicted against measured GD rates
# (hrta.theory through hrta.theory_tables).


rule theory_spectrum:
    input:
        grid=str(GRID_FILE),
    output:
        table=report(f"{OUT}/theory/ntk_spectrum.parquet",
                     caption="../report/ntk_spectrum.rst", category="Theory"),
        checks=f"{OUT}/theory/spectrum_checks.json",
    priority: 5  # as the empirical-NTK jobs (below): needs only the grid
    log:
        f"{OUT}/logs/theory/spectrum.log",
    conda:
        str(ENV)
    script:
        "../scripts/theory_spectrum.py"


rule theory_ntk_width:
    input:
        grid=str(GRID_FILE),
    output:
        table=f"{OUT}/theory/ntk_width/{{backend}}.parquet",
        checks=f"{OUT}/theory/ntk_width/{{backend}}.json",
    # only the theory backends with no evaluation runs; the others' check is made by their
    # first evaluation job (rule train_with_ntk, in train.smk)
    wildcard_constraints:
        backend=one_of(NTK_ALONE),
    params:
        missing=config["missing_backends"],
    # below the training chain (priority 10), which is mostly one job at a time: these jobs
    # need only the grid and fill the other core from the start
    priority: lambda wildcards: 5 + start_up_rank(wildcards)
    log:
        f"{OUT}/logs/theory/ntk_width_{{backend}}.log",
    threads: 1
    conda:
        str(ENV)
    script:
        "../scripts/theory_ntk_width.py"


rule theory_rates:
    input:
        plan=f"{OUT}/plan/eval.json",
        manifests=manifests("eval"),
    output:
        table=report(f"{OUT}/theory/rates.parquet", caption="../report/rates.rst",
                     category="Theory"),
    params:
        enabled=(GRID["theory"] or {}).get("rates", True),
    log:
        f"{OUT}/logs/theory/rates.log",
    conda:
        str(ENV)
    script:
        "../scripts/theory_rates.py"


rule theory_collect:
    input:
        spectrum=f"{OUT}/theory/spectrum_checks.json",
        tables=expand(f"{OUT}/theory/ntk_width/{{backend}}.parquet", backend=THEORY_BACKENDS),
        checks=expand(f"{OUT}/theory/ntk_width/{{backend}}.json", backend=THEORY_BACKENDS),
    output:
        table=report(f"{OUT}/theory/ntk_width.parquet", caption="../report/ntk_width.rst",
                     category="Theory"),
        checks=f"{OUT}/theory/checks.json",
    log:
        f"{OUT}/logs/theory/collect.log",
    conda:
        str(ENV)
    script:
        "../scripts/theory_collect.py"
