from pathlib import Path

import pytest
import yaml

from tuneloop.config import load_policy_file
from tuneloop.errors import BadRequest
from tuneloop.signals.policy import RewardPolicy, SignalWeights

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("reward_policy*.yaml")), ids=lambda p: p.name)
def test_every_shipped_reward_policy_loads(path: Path) -> None:
    assert isinstance(load_policy_file(path, RewardPolicy), RewardPolicy)


def test_shipped_default_policy_matches_the_model_defaults() -> None:
    assert load_policy_file(CONFIGS / "reward_policy.yaml", RewardPolicy) == RewardPolicy()


def test_every_policy_field_has_a_description() -> None:
    for model in (RewardPolicy, SignalWeights):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_shipped_default_policy_sets_every_field() -> None:
    data = yaml.safe_load((CONFIGS / "reward_policy.yaml").read_text())
    assert set(data) == set(RewardPolicy.model_fields)
    assert set(data["weights"]) == set(SignalWeights.model_fields)


def test_bad_value_error_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "reward_policy.yaml"
    path.write_text("weights:\n  thumbs: lots\n")
    with pytest.raises(BadRequest) as caught:
        load_policy_file(path, RewardPolicy)
    assert (
        caught.value.message
        == f"reward policy {path}: weights.thumbs: Input should be a valid number, "
        + ("unable to parse string as a number")
    )
    assert caught.value.param == "weights.thumbs"


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("min_confidense: 0.5\n")
    with pytest.raises(BadRequest, match="min_confidense: Extra inputs are not permitted"):
        load_policy_file(path, RewardPolicy)


def test_out_of_range_value_names_field(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("heldout_fraction: 1.5\nrater_cap: 0\n")
    with pytest.raises(
        BadRequest,
        match=r"rater_cap: Input should be greater than 0; heldout_fraction: Input should be less than 1",
    ):
        load_policy_file(path, RewardPolicy)


def test_invalid_yaml_and_missing_file_are_bad_requests(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("weights: [\n")
    with pytest.raises(BadRequest, match="not valid YAML"):
        load_policy_file(broken, RewardPolicy)
    with pytest.raises(BadRequest, match="cannot read it"):
        load_policy_file(tmp_path / "absent.yaml", RewardPolicy)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n")
    with pytest.raises(BadRequest, match="expected a mapping"):
        load_policy_file(listing, RewardPolicy)


def test_empty_file_is_the_default_policy(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_policy_file(path, RewardPolicy) == RewardPolicy()
