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
