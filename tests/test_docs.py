"""The README stays a concise front page, and the documentation's links lead somewhere."""

import glob
import os
import re

from deblurfast.bench import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]


def test_readme_is_concise():
    assert len(open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()) < 25_000


def test_relative_links_lead_to_files():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", open(page, encoding="utf-8").read()):
            if re.match(r"[a-z]+:", target):  # http(s), mailto
                continue
            path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
            if not os.path.exists(path):
                broken.append(f"{os.path.relpath(page, ROOT)}: {target}")
    assert not broken, broken


def test_the_benchmark_page_has_the_generated_part():
    text = open(report.PAGE, encoding="utf-8").read()
    assert text.count(report.START) == 1 and text.count(report.END) == 1


def test_the_readme_heldout_table_is_generated_from_the_committed_result():
    text = open(report.README, encoding="utf-8").read()
    assert text.count(report.HELDOUT_START) == 1 and text.count(report.HELDOUT_END) == 1
    body = text.split(report.HELDOUT_START, 1)[1].split(report.HELDOUT_END, 1)[0].strip()
    assert body == report.render_heldout(report.HELDOUT).strip()  # `python -m deblurfast.bench.report` wrote it
