"""The README documents every CLI command and every setting; this fails when one is added without docs."""

from __future__ import annotations

from pathlib import Path

from tuneloop.cli import build_parser
from tuneloop.config import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


def _commands() -> list[str]:
    parser = build_parser()
    found = []
    for name, sub in parser._subparsers._group_actions[0].choices.items():
        nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
        found += (
            [f"tuneloop {name} {child}" for child in nested[0].choices] if nested else [f"tuneloop {name}"]
        )
    return found


def test_every_cli_command_is_in_the_readme() -> None:
    missing = [c for c in _commands() if f"`{c}" not in README]
    assert not missing, f"document these commands in README.md: {missing}"


def test_every_setting_is_in_the_readme() -> None:
    missing = [
        f"TUNELOOP_{n.upper()}" for n in Settings.model_fields if f"TUNELOOP_{n.upper()}" not in README
    ]
    assert not missing, f"document these settings in README.md: {missing}"
