"""Every example in configs/ loads with the model it documents, and the *_policy files hold the defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneloop.config import load_yaml_model
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
