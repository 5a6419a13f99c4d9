# Stage "train": one job per batch of runs on one backend (hrta.batch): the framework is
# imported once per job, runs with complete folders are kept, each folder is written
# atomically, and the manifest is written last.


rule train:
    input:
        plan=f"{OUT}/plan/{{phase}}.json",
    output:
        manifest=f"{OUT}/batches/{{phase}}/{{backend}}/{{batch}}.json",
    params:
        runs_root=f"{OUT}/runs",
        missing=config["missing_backends"],
    priority: lambda wildcards: 10 + start_up_rank(wildcards)  # the chain; see common.smk
    log:
        f"{OUT}/logs/train/{{phase}}/{{backend}}/{{batch}}.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        str(ENV)
    script:
        "../scripts/train_batch.py"


# The first evaluation batch of a backend whose empirical NTK the theory stage checks: the same
# training job, then the check in the same process (see NTK_WITH_TRAINING in common.smk).
rule train_with_ntk:
    input:
        plan=f"{OUT}/plan/eval.json",
        grid=str(GRID_FILE),
    output:
        manifest=f"{OUT}/batches/eval/{{backend}}/0.json",
        table=f"{OUT}/theory/ntk_width/{{backend}}.parquet",
        checks=f"{OUT}/theory/ntk_width/{{backend}}.json",
    wildcard_constraints:
        backend=one_of(NTK_WITH_TRAINING),
    params:
        runs_root=f"{OUT}/runs",
        missing=config["missing_backends"],
    priority: lambda wildcards: 10 + start_up_rank(wildcards)
    log:
        f"{OUT}/logs/train/eval/{{backend}}/0.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        str(ENV)
    script:
        "../scripts/train_with_ntk.py"


ruleorder: train_with_ntk > train
