"""The documentation: the site builds without a warning, its pages are the README's links, and the
user-facing text does not name this repository's development setup."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER_FACING = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_mkdocs_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "fit_strategy" in api and "StepGuard" in api  # the reference is generated from the docstrings


def test_readme_links_point_at_pages_that_exist_and_stays_short():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", text)
    assert links and all((ROOT / link).is_file() for link in links), links
    assert len(text.splitlines()) <= 150
    assert text.splitlines()[3:5] == ['pip install -e ".[test]"          # 1. install (Python >= 3.11; pulls torch)',
                                      'python -m pytest -q               # 2. run the tests']


def test_user_facing_text_does_not_name_the_development_setup():
    for page in USER_FACING:
        assert "../shared" not in page.read_text(), page
