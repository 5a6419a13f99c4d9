# Stage "tuning": the fair-tuning rule of the grid picks one learning rate per
# (task, method, optimizer, schedule) from the tuning runs (hrta.tuning).


rule select_learning_rates:
    input:
        grid=str(GRID_FILE),
        plan=f"{OUT}/plan/tune.json",
        manifests=manifests("tune"),
    output:
        selection=report(f"{OUT}/selection.parquet", caption="../report/selection.rst",
                         category="Tuning"),
    params:
        name=GRID.name,
    priority: 10
    log:
        f"{OUT}/logs/select_learning_rates.log",
    conda:
        str(ENV)
    script:
        "../scripts/select_learning_rates.py"
