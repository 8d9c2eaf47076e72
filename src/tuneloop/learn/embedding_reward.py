"""The fast reward model: frozen all-MiniLM-L6-v2 embeddings and a Bradley–Terry logistic head.

r(prompt, completion) = w · [e(completion), e(prompt) * e(completion)],
so P(a > b) = sigmoid(w · (phi_a - phi_b)).
It trains in seconds on CPU: a cheap first reward model, and a baseline for the LoRA one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuneloop.errors import BadRequest
from tuneloop.learn.calibration import CALIBRATION_FILE, calibration_report, train_val_test_split
from tuneloop.learn.job_config import JobSpec
from tuneloop.learn.privacy import DifferentialPrivacy, budget_from, train_private_head
from tuneloop.signals.embeddings import DIMENSIONS, embed_unique
from tuneloop.signals.records import completion_text

if TYPE_CHECKING:
    from transformers import TrainerCallback

HEAD_FILE = "embedding_reward.npz"
MIN_ROWS = 5


def train_embedding_reward(
    spec: JobSpec,
    rows: list[dict],
    out_dir: Path,
    callbacks: list[TrainerCallback] | None = None,
    resume_from: str | None = None,
) -> dict[str, Any]:
    """Fit the logistic BT head on embedding differences; report held-out accuracy and ECE; save the head.

    With a DP budget in `trainer_args` the head trains by DP-SGD and the spent (ε, δ) joins the metrics."""
    # Seconds of work: there is nothing to checkpoint, so `callbacks` and `resume_from` are unused.
    if len(rows) < MIN_ROWS:
        raise BadRequest(f"a reward model needs at least {MIN_ROWS} pairs, got {len(rows)}", param="rows")
    dp = budget_from(spec.trainer_args)
    train, val, test = train_val_test_split(rows, spec.seed)
    if dp is not None:
        # A temperature fitted on pairs outside the DP guarantee would leak them; those pairs train instead.
        train, val = train + val, []
    w, fit = fit_head(pair_features(train), spec, dp)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(out_dir / HEAD_FILE, w=w)
    model = EmbeddingRewardModel(w)
    report = calibration_report(_margins(model, val), _margins(model, test))
    (out_dir / CALIBRATION_FILE).write_text(json.dumps({"temperature": report["temperature"]}))
    return {**report, "train_pairs": len(train), **fit}


def fit_head(
    diffs: np.ndarray, spec: JobSpec, dp: DifferentialPrivacy | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The head w minimising the BT loss on chosen-minus-rejected features: L-BFGS, or DP-SGD under `dp`."""
    import torch

    l2 = float(spec.trainer_args["l2"])
    if dp is not None:
        # The L2 penalty l2·|w|² has gradient 2·l2·w: SGD's weight decay, applied after the noise.
        return train_private_head(diffs, dp, weight_decay=2 * l2)
    torch.manual_seed(spec.seed)
    x = torch.tensor(diffs, dtype=torch.float32)
    w = torch.zeros(x.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [w], max_iter=int(spec.trainer_args["max_iter"]), line_search_fn="strong_wolfe"
    )
    losses: list[float] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.softplus(-(x @ w)).mean() + l2 * (w * w).sum()
        loss.backward()
        losses.append(float(loss.detach()))
        return loss

    optimizer.step(closure)
    return w.detach().numpy(), {"first_loss": losses[0], "final_loss": losses[-1]}


def _prompt_text(messages: list[dict]) -> str:
    return "\n".join(m["content"] for m in messages if m.get("role") != "assistant")


def features(items: list[tuple[list[dict], str]]) -> np.ndarray:
    """phi(prompt, completion) = [e(completion), e(prompt) * e(completion)] with unit-norm embeddings."""
    # Pairs repeat their prompt and often an answer: embed each distinct text once.
    vectors = embed_unique([_prompt_text(p) for p, _ in items] + [c for _, c in items])
    prompts = np.array([vectors[_prompt_text(p)] for p, _ in items]).reshape(-1, DIMENSIONS)
    completions = np.array([vectors[c] for _, c in items]).reshape(-1, DIMENSIONS)
    return np.concatenate([completions, prompts * completions], axis=1)


def pair_features(rows: list[dict]) -> np.ndarray:
    """phi(chosen) - phi(rejected) per pair: the head's training inputs."""
    chosen = features([(r["prompt"], completion_text(r["chosen"])) for r in rows])
    rejected = features([(r["prompt"], completion_text(r["rejected"])) for r in rows])
    return chosen - rejected


def _margins(model: EmbeddingRewardModel, rows: list[dict]) -> list[float]:
    return (pair_features(rows) @ model.w).tolist() if rows else []


class EmbeddingRewardModel:
    """Scores a completion with the MiniLM features and the fitted head."""

    def __init__(self, w: np.ndarray, temperature: float = 1.0) -> None:
        self.w = w
        self.temperature = temperature

    @classmethod
    def load(cls, artifact_dir: Path, temperature: float = 1.0) -> EmbeddingRewardModel:
        """Read the head saved by `train_embedding_reward`."""
        with np.load(artifact_dir / HEAD_FILE) as data:
            return cls(data["w"], temperature)

    def score(self, prompt_messages: list[dict], completion_text: str) -> float:
        """Reward of one completion."""
        return self.score_batch([(prompt_messages, completion_text)])[0]

    def score_batch(self, items: list[tuple[list[dict], str]]) -> list[float]:
        """Rewards of many completions (one embedding pass)."""
        return (features(items) @ self.w).tolist()
