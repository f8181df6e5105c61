"""dvc.yaml's code deps are exact: every module a stage's script imports (transitively, within the
package) is a dep of that stage, so a change to it re-runs the stage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src"


def module_file(name: str) -> Path | None:
    base = PACKAGE / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """facevae modules (and pipelines/ helpers) a file imports anywhere in it, functions included."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from facevae.x import module`
    return {name for name in found if name.startswith("facevae") or name == "_common"}


def holds_code(init: Path) -> bool:
    """More than a docstring (facevae.sweep's __init__ holds the sweep itself)."""
    body = ast.parse(init.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def code_closure(script: Path) -> set[Path]:
    """The script and every package module it reaches, as paths relative to the repository
    (the packages' __init__ files hold docstrings only, and are left out)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            target = script.parent / "_common.py" if name == "_common" else module_file(name)
            if target is not None and (target.name != "__init__.py" or holds_code(target)):
                todo.append(target)
    return {p.relative_to(ROOT) if p.is_relative_to(ROOT) else p for p in seen}


def stages() -> dict[str, dict]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in spec.items()}


def stage_script(stage: dict) -> Path:
    words = stage["cmd"].split()
    return ROOT / next(w for w in words if w.startswith("pipelines/") and w.endswith(".py"))


def dep_paths(stage: dict) -> list[str]:
    return [next(iter(d)) if isinstance(d, dict) else d for d in stage.get("deps", [])]


def covered(path: Path, deps: list[str]) -> bool:
    text = path.as_posix()
    return any(text == d.rstrip("/") or text.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_imported_module_is_a_dep(name):
    stage = stages()[name]
    missing = sorted(p.as_posix() for p in code_closure(stage_script(stage)) if not covered(p, dep_paths(stage)))
    assert missing == [], f"dvc.yaml stage {name} misses code deps: {missing}"


@pytest.mark.parametrize("name", sorted(stages()))
def test_no_code_dep_outside_what_the_stage_imports(name):
    """A code dep the stage does not import re-runs it for nothing (and hides a stale list)."""
    stage = stages()[name]
    closure = {p.as_posix() for p in code_closure(stage_script(stage))}
    code = [d for d in dep_paths(stage) if d.startswith(("src/", "pipelines/"))]
    extra = [d for d in code if not any(c == d or c.startswith(d.rstrip("/") + "/") for c in closure)]
    assert extra == [], f"dvc.yaml stage {name} lists code it does not import: {extra}"


def test_the_closure_follows_imports_inside_functions(tmp_path):
    """The check itself: an import inside a function counts (it runs when the stage runs)."""
    script = tmp_path / "stage.py"
    script.write_text("def run():\n    from facevae.core.atomic import atomic_path\n")
    assert Path("src/facevae/core/atomic.py") in code_closure(script)
