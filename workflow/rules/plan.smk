# Stage "inputs": expand the grid into run specs. Each run's data, initial parameters, batch
# indices, s_k and lr_k are a pure function of its spec (hrta.inputs.build_inputs, NumPy,
# seeded); the training jobs build them and store them in every run folder as inputs.npz.


rule plan_tune:
    input:
        grid=str(GRID_FILE),
    output:
        plan=f"{OUT}/plan/tune.json",
        grid=report(f"{OUT}/plan/grid.json", caption="../report/grid.rst", category="Plan"),
    params:
        name=GRID.name,
        runs_per_job=RUNS_PER_JOB,
        backends=BACKENDS,
        missing=MISSING,
    priority: 10
    log:
        f"{OUT}/logs/plan_tune.log",
    conda:
        str(ENV)
    script:
        "../scripts/plan_tune.py"


rule plan_eval:
    input:
        grid=str(GRID_FILE),
        selection=f"{OUT}/selection.parquet",
    output:
        plan=f"{OUT}/plan/eval.json",
    params:
        name=GRID.name,
        runs_per_job=RUNS_PER_JOB,
        backends=BACKENDS,
    priority: 10
    log:
        f"{OUT}/logs/plan_eval.log",
    conda:
        str(ENV)
    script:
        "../scripts/plan_eval.py"
