"""Every example in configs/ loads with the model it documents, and the *_policy files hold the defaults."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from tuneloop.config import load_yaml_model
from tuneloop.errors import BadRequest
from tuneloop.evaluate.policy import GatePolicy
from tuneloop.loop import LoopPolicy
from tuneloop.loop.light import LightPolicy
from tuneloop.privacy.policy import PrivacyPolicy
from tuneloop.retrieve.policy import RetrievalPolicy
from tuneloop.rollout.policy import RolloutPolicy
from tuneloop.signals.policy import RewardPolicy

CONFIGS = Path(__file__).parents[1] / "configs"
MODELS = {
    "reward_policy": RewardPolicy,
    "gate_policy": GatePolicy,
    "rollout_policy": RolloutPolicy,
    "loop_policy": LoopPolicy,
    "privacy_policy": PrivacyPolicy,
    "light_policy": LightPolicy,
    "retrieval_policy": RetrievalPolicy,
}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*_policy.yaml")), ids=lambda p: p.name)
def test_each_policy_example_loads_and_documents_the_defaults(path: Path) -> None:
    model = MODELS[path.stem]
    assert load_yaml_model(path, model, path.stem) == model()


def test_every_config_file_is_covered_by_a_test() -> None:
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert names - set(MODELS) <= {"golden_example"}, "add the new config to tests/test_configs.py"


def test_the_golden_example_loads() -> None:
    from tuneloop.evaluate.suites.golden import load_golden

    assert load_golden(CONFIGS / "golden_example.yaml").items


def _models_within(model: type[BaseModel]) -> Iterator[type[BaseModel]]:
    yield model
    for field in model.model_fields.values():
        for kind in _types_in(field.annotation):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                yield from _models_within(kind)


def _types_in(annotation: Any) -> Iterator[Any]:
    yield annotation
    for argument in get_args(annotation):
        yield from _types_in(argument)


@pytest.mark.parametrize("model", MODELS.values(), ids=list(MODELS))
def test_no_policy_takes_an_infinite_or_nan_number_anywhere(model: type[BaseModel]) -> None:
    # `.inf` is valid YAML: as a weight it put NaN rewards in a snapshot; as a duration it crashed the loop.
    assert all(m.model_config.get("allow_inf_nan") is False for m in _models_within(model))


@pytest.mark.parametrize(
    ("model", "text"),
    [
        (PrivacyPolicy, "retention_days: 1.0e+300"),
        (LoopPolicy, "alert_cooldown_hours: .inf"),
        (RewardPolicy, "weights:\n  thumbs: .inf"),
        (RewardPolicy, "half_life_days: 1.0e-300"),
        (RolloutPolicy, "guardrails:\n  error_rate: .nan"),
    ],
)
def test_a_number_past_what_a_policy_can_use_is_refused_naming_the_file(
    tmp_path: Path, model: type[BaseModel], text: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text + "\n")
    with pytest.raises(BadRequest, match=r"policy\.yaml"):
        load_yaml_model(path, model, "policy")
