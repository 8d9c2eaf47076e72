"""A version's light parts (in-context examples, best-of-N) composed by `tuneloop versions create`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneloop.cli import main
from tuneloop.cli.admin import open_store
from tuneloop.registry.composition import BestOfN, Decoding, ExamplePolicy
from tuneloop.registry.versions import Registry


@pytest.fixture
def registry(tuneloop_home: Path) -> Registry:
    store = open_store(create=True)
    tenant, _ = store.create_tenant("acme")
    return Registry(store.for_tenant(tenant))


def _create(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = main(["versions", "create", "--tenant", "acme", *args])
    return code, capsys.readouterr().err.strip()


def test_create_composes_examples_and_best_of_n_with_defaults_for_what_is_unset(
    registry: Registry, capsys: pytest.CaptureFixture
) -> None:
    code, _ = _create(capsys, "--examples", "3", "--best-of-n", "auto", "--latency-budget-ms", "2500")
    assert code == 0
    [version] = registry.list()
    decoding = Decoding.parse(version.decoding)
    assert decoding.examples == ExamplePolicy(k=3)
    assert decoding.best_of_n == BestOfN(n=None, latency_budget_ms=2500)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--examples", "9"), "examples.k"),
        (("--examples-min-similarity", "1.5"), "examples.min_similarity"),
        (("--best-of-n", "1"), "best_of_n.n"),
        (("--best-of-n", "many"), "--best-of-n takes"),
    ],
)
def test_bad_light_parts_are_one_line_errors_and_register_nothing(
    registry: Registry, capsys: pytest.CaptureFixture, args: tuple[str, ...], says: str
) -> None:
    code, err = _create(capsys, *args)
    assert code == 1 and says in err and len(err.splitlines()) == 1
    assert registry.list() == []


def test_versions_list_names_what_each_version_is_made_of(
    registry: Registry, capsys: pytest.CaptureFixture
) -> None:
    assert _create(capsys, "--examples", "2", "--system-prompt", "Answer in one line.")[0] == 0
    assert _create(capsys, "--temperature", "0.2", "--best-of-n", "2")[0] == 0
    assert main(["versions", "list", "--tenant", "acme"]) == 0
    columns = sorted(line.split("\t")[1] for line in capsys.readouterr().out.splitlines())
    assert columns == ["base model + decoding + best-of-N", "base model + prompt + examples"]
    assert main(["versions", "list", "--tenant", "acme", "--json"]) == 0
    assert {v["kind"] for v in json.loads(capsys.readouterr().out)} == {"adapter"}
