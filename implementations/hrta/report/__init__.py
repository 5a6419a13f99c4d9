"""The comparison report: claims with verdicts, per-task results, the agreement certificate,
theory checks, provenance and citation, as one self-contained HTML file and a Markdown twin.

Modules, one idea each: :mod:`~hrta.report.load` (read a results folder, the report id),
:mod:`~hrta.report.stats` (paired tests, Holm, verdict rules), :mod:`~hrta.report.claims`
(claims (a)-(e)), :mod:`~hrta.report.figures` (matplotlib), :mod:`~hrta.report.certificate`,
:mod:`~hrta.report.provenance` (and citation), :mod:`~hrta.report.document` (HTML and
Markdown), :mod:`~hrta.report.build` (assembly and output).
"""

from hrta.report.build import build_report
from hrta.report.load import ReportInputError

__all__ = ["ReportInputError", "build_report"]
