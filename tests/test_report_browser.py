"""The smoke grid's report in a real browser (issue 5): headless Chromium (Debian's
``chromium``, installed here with apt-get when missing and when running as root) opens the
self-contained HTML with networking off, and the page must load with no console error, no
uncaught exception, no request leaving the file and no broken image. Screenshots are saved in
the report's folder (``screenshot.png``, ``screenshot-full.png``).

The smoke report comes from running the pipeline on the smoke grid in a temporary folder
(which ends with the report rule); set ``HRTA_SMOKE_RESULTS`` to an existing smoke results
folder (e.g. ``results/smoke``) to build the report from it instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hrta.report.browser import check_page, install_chromium
from hrta.report.build import build_report

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


@pytest.fixture(scope="module")
def chromium():
    binary, reason = install_chromium()
    if binary is None:
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory) -> Path:
    """The folder of the smoke grid's report."""
    work = tmp_path_factory.mktemp("smoke")
    given = os.environ.get("HRTA_SMOKE_RESULTS")
    if given:
        return build_report(given, work / "reports")
    done = subprocess.run([str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"),
                           "--directory", str(work), "--cores", "2", "--config", "grid=smoke",
                           "missing_backends=skip"],
                          capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    index = json.loads((work / "results" / "smoke" / "report.json").read_text())
    folder = Path(index["folder"])
    if not folder.is_absolute():
        folder = work / folder
    assert (work / "results" / "smoke" / "report.html").read_bytes() == \
        (folder / "report.html").read_bytes()
    return folder


@pytest.mark.slow
def test_smoke_report_loads_cleanly_in_headless_chromium(chromium, smoke_report):
    page = smoke_report / "report.html"
    html = page.read_text()
    check = check_page(page, screenshot_dir=smoke_report, binary=chromium)
    assert check.problems == [], check.problems
    assert check.title.startswith("HRTA reproducibility report: grid smoke")
    assert check.images == html.count("<img ") >= 8
    assert check.page_height > 3000
    for section in ("Claims", "Results per task", "Agreement certificate", "Theory",
                    "Provenance", "How to cite"):
        assert f">{section}</h2>" in html, section
    assert "the predicted rate is a lower bound on the speed of training" in html
    for shot in ("screenshot.png", "screenshot-full.png"):
        data = (smoke_report / shot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, shot
    assert re.search(r"smoke-[0-9a-f]{12}", smoke_report.name)


@pytest.mark.slow
def test_the_check_catches_broken_images_and_console_errors(chromium, tmp_path):
    """The browser check can fail: a page with a broken image, an external request and a
    console error reports all three."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body>'
                   '<img alt="broken" src="data:image/png;base64,AAAA">'
                   '<img alt="far" src="https://example.invalid/x.png">'
                   '<script>console.error("boom")</script></body></html>')
    check = check_page(bad, binary=chromium)
    assert any("broken" in p for p in check.broken_images)
    assert any("example.invalid" in r for r in check.external_requests)
    assert any("boom" in e for e in check.console_errors)
