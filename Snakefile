# hrta-bench pipeline: experiment grid -> plan -> tuning -> evaluation on every backend ->
# tables, agreement with the NumPy reference and the NTK theory checks. One rule file per stage
# in workflow/rules/; the default profile is workflow/profiles/default (via the profiles link).
#   snakemake --cores 2                       # the default grid (benchmarks/default.yaml)
#   snakemake --cores 2 --config grid=smoke   # every stage at tiny sizes
# Outputs: <results>/<grid>/ (see README.md, "The pipeline").
import mimetypes
from pathlib import Path

from snakemake.utils import min_version

from hrta.pipeline_config import exit_on_bad_input, validate_config
from hrta.spec import load_document

min_version("9.0")

# `snakemake --report` embeds the parquet tables as downloads under their registered type
# (without it Snakemake labels them text/plain).
mimetypes.add_type("application/vnd.apache.parquet", ".parquet")


CONFIG_FILE = Path(workflow.basedir) / "config" / "config.yaml"
with exit_on_bad_input():  # a non-UTF-8 or broken config file: one line, not a traceback
    load_document(CONFIG_FILE, what="config")


configfile: CONFIG_FILE


# A bad config or grid stops here with one line naming the field, exit status 2
# (snakemake.utils.validate would print a multi-line jsonschema report instead).
with exit_on_bad_input():
    validate_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/agreement.smk"
include: "workflow/rules/theory.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_outputs(),
        f"{OUT}/report.html",
    default_target: True
