"""The simulator measures tuneloop from the outside: it may import only itself from `tuneloop`."""

from __future__ import annotations

import ast
from pathlib import Path

import tuneloop.sim

SIM_DIR = Path(tuneloop.sim.__file__).parent


def _package(path: Path) -> str:
    return ".".join(("tuneloop", "sim", *path.relative_to(SIM_DIR).parent.parts))


def _imports(path: Path, package: str) -> list[str]:
    """Absolute names of every module `path` (in `package`) imports, relative imports resolved."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                names.append(".".join([*base, *([node.module] if node.module else [])]))
            else:
                names.append(node.module or "")
    return names


def test_simulator_imports_nothing_from_tuneloop_but_itself() -> None:
    files = sorted(SIM_DIR.rglob("*.py"))
    assert len(files) >= 5
    leaks = {
        f"{path.relative_to(SIM_DIR)}: {name}"
        for path in files
        for name in _imports(path, _package(path))
        if (name == "tuneloop" or name.startswith("tuneloop."))
        and not (name == "tuneloop.sim" or name.startswith("tuneloop.sim."))
    }
    assert not leaks


def test_import_check_catches_a_relative_import_that_escapes(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("from ...store import repository\nfrom .. import scenario\nimport tuneloop.serve\n")
    assert _imports(sneaky, "tuneloop.sim.scenarios") == ["tuneloop.store", "tuneloop.sim", "tuneloop.serve"]
