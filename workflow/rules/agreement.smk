# Stage "agreement": every evaluation run of a non-reference backend against the NumPy
# reference run of the same spec (hrta.compare, tolerances from hrta.tolerances).


rule agreement:
    input:
        plan=f"{OUT}/plan/eval.json",
        manifests=manifests("eval"),
    output:
        table=report(f"{OUT}/agreement.parquet", caption="../report/agreement.rst",
                     category="Agreement"),
        summary=report(f"{OUT}/agreement.json", caption="../report/agreement.rst",
                       category="Agreement"),
    log:
        f"{OUT}/logs/agreement.log",
    conda:
        str(ENV)
    script:
        "../scripts/agreement.py"
