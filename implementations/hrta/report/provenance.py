"""Where a report's numbers came from, and how to cite it.

:func:`provenance` gathers, from the results tables and the machine building the report: the
suite and spec versions, the git commits the runs were made at (and whether the tree was
dirty), the commit of the code building the report, library versions per backend, CPU, the
date, the hashes of the config (resolved grid) and of every input table, and a digest of the
run specs (which fix every run's data, initial parameters and batches). :func:`bibtex` writes
the report's BibTeX entry; :func:`citation_cff` reads the repository's ``CITATION.cff``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import yaml

from hrta import provenance as suite_provenance
from hrta.report.load import Bundle, input_digests

REPO_ROOT = Path(__file__).resolve().parents[3]
PAPER_BIBTEX = """@article{yang2025hrta,
  title         = {Homotopy Relaxation Training Algorithms for Infinite-Width Two-Layer {ReLU}
                   Neural Networks},
  author        = {Yang, Yahong and Chen, Qipin and Hao, Wenrui},
  journal       = {Journal of Scientific Computing},
  volume        = {102},
  pages         = {40},
  year          = {2025},
  eprint        = {2309.15244},
  archivePrefix = {arXiv}
}"""


def code_version() -> dict:
    """The code building the report: suite_version, spec_version, commit, dirty."""
    return suite_provenance.suite()


def _unique(series) -> list:
    return sorted({str(v) for v in series.dropna()})


def library_versions(bundle: Bundle) -> dict[str, dict[str, str]]:
    """{backend: {library: version(s)}} over the backend's runs (several versions joined by
    ", " — results made with different versions of one library are flagged this way)."""
    out: dict[str, dict[str, set]] = {}
    for backend, text in zip(bundle.results["backend"], bundle.results["versions"], strict=True):
        try:
            versions = json.loads(text) if isinstance(text, str) else {}
        except json.JSONDecodeError:
            versions = {}
        entry = out.setdefault(str(backend), {})
        for lib, ver in versions.items():
            entry.setdefault(lib, set()).add(str(ver))
    return {b: {lib: ", ".join(sorted(v)) for lib, v in sorted(libs.items())}
            for b, libs in sorted(out.items())}


def specs_digest(bundle: Bundle) -> str:
    """sha256 over the sorted spec digests of every run (a run's data, initial parameters and
    batch indices are a pure function of its spec)."""
    digests = sorted(set(bundle.results["spec_digest"].astype(str)))
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def provenance(bundle: Bundle, report_id: str, code: dict, date: dt.datetime) -> dict:
    """Everything a reader needs to tell where the report came from (JSON-able)."""
    res = bundle.results
    dirty = _unique(res["git_dirty"]) if "git_dirty" in res else []
    cpus = _unique(res["cpu"]) if "cpu" in res else []
    return {
        "report_id": report_id,
        "date": date.isoformat(timespec="seconds"),
        "grid": bundle.name,
        "grid_digest": bundle.grid_doc.get("digest"),
        "suite_versions": _unique(res["suite_version"]),
        "spec_versions": _unique(res["spec_version"]),
        "run_commits": _unique(res["git_commit"]),
        "run_tree_dirty": dirty,
        "report_code": {"suite_version": code.get("suite_version"),
                        "spec_version": code.get("spec_version"),
                        "commit": code.get("commit"), "dirty": code.get("dirty")},
        "library_versions": library_versions(bundle),
        "run_cpus": cpus,
        "report_host": suite_provenance.host(),
        "runs": int(len(res)),
        "eval_runs": int((res["phase"] == "eval").sum()),
        "tune_runs": int((res["phase"] == "tune").sum()),
        "input_sha256": input_digests(bundle),
        "specs_sha256": specs_digest(bundle),
        "results_dir": str(bundle.root),
    }


def citation_cff(root: Path = REPO_ROOT) -> dict | None:
    """The repository's CITATION.cff as a mapping, or None when it is not there."""
    path = root / "CITATION.cff"
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None


def bibtex(report_id: str, grid: str, code: dict, date: dt.datetime,
           cff: dict | None) -> str:
    """The report's BibTeX entry (key ``hrtabench:<report id>``), then the software entry from
    CITATION.cff and the HRTA paper."""
    cff = cff or {}
    authors = " and ".join("{" + a["name"] + "}" if "name" in a else
                           f"{a.get('family-names', '')}, {a.get('given-names', '')}"
                           for a in cff.get("authors", [])) or "{hrta-bench developers}"
    title = cff.get("title", "hrta-bench")
    version = code.get("suite_version") or cff.get("version", "")
    commit = code.get("commit") or "unknown"
    dirty = " (uncommitted changes)" if code.get("dirty") else ""
    report = (f"@misc{{hrtabench:{report_id},\n"
              f"  title        = {{{{hrta-bench}} report {report_id}: the Homotopy Relaxation "
              f"Training Algorithm against tuned baselines, grid {grid}}},\n"
              f"  author       = {{{authors}}},\n"
              f"  year         = {{{date.year}}},\n"
              f"  howpublished = {{hrta-bench report {report_id}}},\n"
              f"  note         = {{Report id {report_id}; hrta-bench {version}, git commit "
              f"{commit}{dirty}; generated {date.date().isoformat()}}}\n}}")
    software = (f"@software{{hrtabench:{version},\n"
                f"  title   = {{{title}}},\n"
                f"  author  = {{{authors}}},\n"
                f"  version = {{{version}}},\n"
                f"  license = {{{cff.get('license', '')}}}\n}}")
    return "\n\n".join([report, software, PAPER_BIBTEX])
