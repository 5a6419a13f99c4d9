"""Build the comparison report of the grid's results (rule report)."""

import sys

from hrta import atomic
from hrta.aggregate import write_json
from hrta.report import build_report

sys.stderr = sys.stdout = open(snakemake.log[0], "w", buffering=1)  # noqa: SIM115

folder = build_report(snakemake.params.results, snakemake.params.reports,
                      workers=snakemake.threads)
atomic.write_bytes(snakemake.output.html, (folder / "report.html").read_bytes())
write_json({"report_id": folder.name, "folder": str(folder),
            "html": str(folder / "report.html"), "markdown": str(folder / "report.md"),
            "certificate": str(folder / "certificate.json"),
            "claims": str(folder / "claims.json")}, snakemake.output.index)
print(f"report {folder.name}: {folder / 'report.html'}")
