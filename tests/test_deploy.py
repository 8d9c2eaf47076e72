"""The Dockerfile and compose.yaml agree with the code: settings they set exist and validate, the probe they
call is served, the vLLM profile shares tuneloop's adapter path. (This machine has no Docker daemon; the
files are checked as data.)"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from packaging.specifiers import SpecifierSet

from tuneloop.config import Settings
from tuneloop.learn.job_config import DEFAULT_LORA
from tuneloop.serve.app import create_app, make_backend

ROOT = Path(__file__).parents[1]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
_DEFAULTED = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def _resolved(value: object) -> str:
    """A compose value with `${VAR:-default}` replaced by its default, as an empty environment leaves it."""
    return _DEFAULTED.sub(lambda m: m.group(2) or "", str(value))


def _dockerfile_env() -> dict[str, str]:
    found = {}
    for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", DOCKERFILE, flags=re.M):
        found.update(re.findall(r"(\w+)=(\S+)", block))
    return found


def test_every_tuneloop_variable_compose_sets_is_a_valid_setting(tmp_path: Path) -> None:
    env = COMPOSE["services"]["tuneloop"]["environment"]
    names = {
        n.removeprefix("TUNELOOP_").lower(): _resolved(v) for n, v in env.items() if n.startswith("TUNELOOP_")
    }
    assert set(names) <= set(Settings.model_fields), set(names) - set(Settings.model_fields)
    settings = Settings(**{**names, "home": tmp_path})  # each value parses as its field expects
    assert settings.database_url.startswith("postgresql+psycopg://tuneloop:")
    assert settings.backend == "embedded" and settings.log_format == "json"
    assert set(COMPOSE["services"]["tuneloop"]["depends_on"]) == {"postgres"}


def test_the_vllm_profile_loads_runtime_adapters_from_tuneloops_own_path() -> None:
    vllm = COMPOSE["services"]["vllm"]
    tuneloop = COMPOSE["services"]["tuneloop"]
    home = _dockerfile_env()["TUNELOOP_HOME"]
    args = [_resolved(a) for a in vllm["command"]]
    assert vllm["profiles"] == ["vllm"]
    assert "--enable-lora" in args and any(a.startswith("--max-loras=") for a in args)
    [rank] = [int(a.split("=")[1]) for a in args if a.startswith("--max-lora-rank=")]
    assert rank >= DEFAULT_LORA["r"]
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    volume = next(v.split(":")[0] for v in tuneloop["volumes"] if v.split(":")[1] == home)
    assert f"{volume}:{home}:ro" in vllm["volumes"]
    model = next(a for a in args if a.startswith("--model="))
    assert _resolved(tuneloop["environment"]["TUNELOOP_UPSTREAM_MODEL"]) == model.removeprefix("--model=")
    assert _resolved(tuneloop["environment"]["TUNELOOP_UPSTREAM_URL"]) == "http://vllm:8000/v1"


def test_the_image_runs_as_a_user_with_a_healthcheck_on_a_served_probe() -> None:
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, flags=re.M)
    [check] = re.findall(r"^HEALTHCHECK (?:.*\\\n)*.*", DOCKERFILE, flags=re.M)
    probe = re.search(r"127\.0\.0\.1:8000(/\w+)", check).group(1)
    # Without its lifespan the app has no store: the liveness probe must not need one.
    assert TestClient(create_app(Settings(backend="none"))).get(probe).status_code == 200
    assert '"--host", "0.0.0.0", "--port", "8000"' in DOCKERFILE


def test_the_image_installs_the_pinned_cpu_torch_on_a_supported_python() -> None:
    python = re.search(r"^ARG PYTHON_VERSION=([\d.]+)", DOCKERFILE, flags=re.M).group(1)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert python in SpecifierSet(pyproject["project"]["requires-python"])
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", DOCKERFILE, flags=re.M)
    assert (
        "download.pytorch.org/whl/cpu" in DOCKERFILE
        and "sed -n 's/^torch==//p' constraints.txt" in DOCKERFILE
    )
    assert re.search(r"^torch==2\.13\.0$", (ROOT / "constraints.txt").read_text(), flags=re.M)
    for source in re.findall(r"^COPY (.+) \S+$", DOCKERFILE, flags=re.M):
        assert all((ROOT / name).exists() for name in source.split()), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".tuneloop", "tests"} <= set(ignored)


def test_the_upstream_is_asked_for_its_own_model_name_while_adapters_train_on_the_local_copy() -> None:
    settings = Settings(
        backend="openai",
        upstream_url="http://vllm:8000/v1",
        upstream_model="HuggingFaceTB/SmolLM2-135M-Instruct",
    )
    assert make_backend(settings).model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert settings.model == "smollm2-135m-instruct"  # what training and the gate load
