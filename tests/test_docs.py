"""The docs match the code: every module and setting is in docs/ARCHITECTURE.md, and no doc points outside the
repository."""

from __future__ import annotations

import ast
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


def module_level_imports(path: Path) -> set[str]:
    """The mochi_app modules `path` imports at module level (not inside functions, not for type checking)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module == "mochi_app":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mochi_app."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("mochi_app.")}
    return found


def floors() -> dict[str, int]:
    """Each module's floor: 0 when it imports no module of ours, else one above the highest it imports."""
    graph = {path.stem: module_level_imports(path) for path in (REPO / "mochi_app").glob("*.py")}
    graph.pop("__init__")
    floor: dict[str, int] = {}

    def place(module: str, path: tuple[str, ...]) -> int:
        assert module not in path, f"an import circle: {' -> '.join((*path, module))}"
        if module not in floor:
            floor[module] = 1 + max((place(used, (*path, module)) for used in graph[module]), default=-1)
        return floor[module]

    for module in graph:
        place(module, ())
    return floor


def test_the_layering_in_the_docs_is_the_code_s() -> None:
    """No import circle, and §5's table of floors is what the imports make, so it cannot go stale."""
    floor = floors()
    rows = [
        f"| {n} | {', '.join(f'`{m}`' for m in sorted(m for m in floor if floor[m] == n))} |"
        for n in range(max(floor.values()) + 1)
    ]
    table = "\n".join(["| floor | modules |", "|---|---|", *rows])
    assert table in ARCHITECTURE, f"docs/ARCHITECTURE.md §5 should hold this table:\n{table}"
