"""The README and docs/: the test command CI runs, links that resolve, words for users."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _slug(header: str) -> str:
    """GitHub's anchor for a markdown header."""
    text = re.sub(r"[`*_\[\]()]", "", header.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    fence, out = False, set()
    for ln in page.read_text().splitlines():
        if ln.startswith("```"):
            fence = not fence
        elif not fence and ln.startswith("#"):
            out.add(_slug(ln.lstrip("#")))
    return out


def test_readme_test_command_is_what_ci_runs():
    ci_last = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip()][-1]
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert any(ci_last in b.splitlines() for b in blocks), ci_last


def test_quick_start_uses_a_virtual_environment():
    readme = (ROOT / "README.md").read_text()
    assert "python3 -m venv .venv && . .venv/bin/activate" in readme
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme
    assert "never pulls CUDA" not in readme


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: link to {target}: no such file"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page.name}: link to {target}: no such section"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_speak_of_the_project_alone(page):
    text = page.read_text()
    for phrase in ("../shared/DESIGN.md", "this shared VM", "the shipped `cine_781.cine`", "this VM"):
        assert phrase not in text, f"{page.name}: {phrase!r}"
