"""Importing tuneloop: imports run one way (no module imports a module that imports it back, directly or
not), and the model hub stays off."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"


def _module(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module → the tuneloop modules it imports (at any depth in the file, TYPE_CHECKING included)."""
    modules = {_module(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tuneloop"):
                for alias in node.names:  # `from tuneloop.x import y` may name the module x.y
                    full = f"{node.module}.{alias.name}"
                    targets.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name in modules}
        # a package's __init__ re-exporting its own modules is not a cycle through the package
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_sees_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_tuneloop_never_asks_the_model_hub_unless_the_deployment_says_so() -> None:
    import os
    import subprocess
    import sys

    show = "import os, tuneloop; print(os.environ['HF_HUB_OFFLINE'], os.environ['HF_HUB_DISABLE_TELEMETRY'])"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_")}
    for env, expected in ((clean, "1 1"), ({**clean, "HF_HUB_OFFLINE": "0"}, "0 1")):
        run = subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True)
        assert run.stdout.split() == expected.split(), run.stderr


def test_a_deprecation_tuneloop_users_cannot_act_on_stays_out_of_their_logs(tiny_model) -> None:
    """PEFT reads a property transformers deprecated each time it wraps a model: a line in every log."""
    import subprocess
    import sys

    code = (
        "import tuneloop\nfrom transformers import AutoModelForCausalLM\n"
        f"AutoModelForCausalLM.from_pretrained({str(tiny_model)!r}).is_gradient_checkpointing"
    )
    strict = [sys.executable, "-W", "error::FutureWarning", "-c", code]
    run = subprocess.run(strict, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
