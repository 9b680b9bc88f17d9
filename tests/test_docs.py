"""The docs match the code: every module and setting is in docs/ARCHITECTURE.md, and no doc points outside the
repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mochi_app.config import Settings

REPO = Path(__file__).resolve().parent.parent
ARCHITECTURE = (REPO / "docs" / "ARCHITECTURE.md").read_text()
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])


def test_every_module_is_in_the_module_map() -> None:
    modules = sorted(path.name for path in (REPO / "mochi_app").glob("*.py") if not path.name.startswith("__"))
    missing = [name for name in modules if f"| `{name}` |" not in ARCHITECTURE]
    assert not missing, f"docs/ARCHITECTURE.md §5 lacks a row for {missing}"
    listed = re.findall(r"^\| `(\w+\.py)` \|", ARCHITECTURE, re.MULTILINE)
    assert not set(listed) - set(modules) - {"app.py", "__init__.py", "__main__.py"}, (
        "the map lists modules that are gone"
    )


def test_every_setting_is_documented() -> None:
    names = [name for name in Settings().to_env() if name.startswith("MOCHI_")]
    missing = [name for name in names if f"`{name}`" not in ARCHITECTURE]
    assert not missing, f"docs/ARCHITECTURE.md §3.5 lacks {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_no_doc_points_outside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    for target in re.findall(r"\]\(([^)#\s]+)", text):  # Markdown link targets
        if "://" in target or target.startswith("mailto:"):
            continue
        resolved = (doc.parent / target).resolve()
        assert resolved.is_relative_to(REPO), f"{doc.name} links outside the repository: {target}"
        assert resolved.exists(), f"{doc.name} links to a missing file: {target}"
    assert "../shared" not in text
