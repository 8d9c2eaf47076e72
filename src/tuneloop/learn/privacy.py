"""Differential privacy for the reward model: the budget a tenant asks for and DP-SGD on the embedding head.

The privacy unit is one training pair: adding or removing any single preference pair changes the trained
head's distribution by at most (ε, δ). A user who gave k pairs is covered at roughly kε (group privacy).
Only the logistic head learns from the pairs (the MiniLM encoder is frozen and public), so DP-SGD runs on
the head alone, through Opacus: Poisson-sampled batches, per-pair gradients clipped to `max_grad_norm`,
Gaussian noise calibrated so the accountant's ε after `epochs` stays within the budget.
The noise comes from torch's generator seeded from OS entropy, not a CSPRNG: Opacus' `secure_mode` needs
torchcsprng, which has no build for the pinned torch.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneloop.errors import BadRequest

if TYPE_CHECKING:
    import numpy as np

TRAINER_ARGS_KEY = "dp"  # where a job's trainer_args carry the budget
DP_EMBEDDING_ONLY = (
    "differential privacy trains the reward_embedding head only (the LoRA reward model has no DP-SGD path) — "
    "use `tuneloop train reward --fast` or reward_method: reward_embedding"
)
DEFAULT_MAX_DELTA = 1e-5
ACCOUNTANT = "rdp"  # Rényi DP accounting: Opacus' default, fast; PRV is a few % tighter and far slower


class DifferentialPrivacy(BaseModel):
    """A DP-SGD budget and the few settings that decide how much of it each step spends."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    epsilon: float = Field(
        gt=0,
        le=100,
        description="Privacy budget ε the training may spend (per preference pair); 1 is strong, 8 common.",
    )
    delta: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="δ, the chance the ε bound fails; below 1/pairs. Default min(1e-5, 1/(10·pairs)).",
    )
    max_grad_norm: float = Field(
        default=1.0, gt=0, description="Per-pair gradient clipping bound C; the noise scales with it."
    )
    epochs: int = Field(default=20, ge=1, le=1000, description="Passes over the training pairs.")
    batch_size: int = Field(
        default=256, ge=1, description="Expected pairs per step (Poisson sampling); capped at the pair count."
    )
    learning_rate: float = Field(default=2.0, gt=0, description="SGD step size of the head.")

    def resolved_delta(self, n_pairs: int) -> float:
        """δ for a run on `n_pairs` pairs; an explicit δ of 1/n or more protects nobody and is refused."""
        if self.delta is None:
            return min(DEFAULT_MAX_DELTA, 1 / (10 * n_pairs))
        if self.delta >= 1 / n_pairs:
            raise BadRequest(
                f"dp delta {self.delta:g} is not below 1/{n_pairs} training pairs; a δ that large allows "
                "publishing a pair outright — lower it or leave it unset",
                param="delta",
            )
        return self.delta


def dp_trainer_args(dp: DifferentialPrivacy | None) -> dict[str, Any]:
    """The trainer_args entry that asks a reward_embedding job for DP-SGD (empty without a budget)."""
    return {TRAINER_ARGS_KEY: dp.model_dump()} if dp else {}


def spent_budget(metrics: dict[str, Any]) -> tuple[float, float] | None:
    """The (ε, δ) a version's training spent, from its metrics; None when it was not trained privately."""
    spent = metrics.get("privacy")
    if not isinstance(spent, dict):
        return None
    epsilon, delta = spent.get("epsilon"), spent.get("delta")
    if not isinstance(epsilon, int | float) or not isinstance(delta, int | float):
        return None
    return float(epsilon), float(delta)


def budget_text(metrics: dict[str, Any]) -> str | None:
    """The spent budget in words ("ε=3.99, δ=1e-05"), for the CLI and the dashboard; None when not private."""
    spent = spent_budget(metrics)
    return f"ε={spent[0]:.3g}, δ={spent[1]:.1g}" if spent else None


def budget_from(trainer_args: dict[str, Any]) -> DifferentialPrivacy | None:
    """The budget a job's trainer_args ask for, validated; None when the job is not private."""
    raw = trainer_args.get(TRAINER_ARGS_KEY)
    if raw is None:
        return None
    try:
        return DifferentialPrivacy.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'dp'}: {e['msg']}" for e in exc.errors())
        raise BadRequest(f"bad differential-privacy settings: {problems}", param=TRAINER_ARGS_KEY) from exc


def train_private_head(
    diffs: np.ndarray, dp: DifferentialPrivacy, weight_decay: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """DP-SGD on the Bradley–Terry head w (loss softplus(-d·w) per pair); returns w and what was spent."""
    import torch
    from opacus import PrivacyEngine

    n = len(diffs)
    delta = dp.resolved_delta(n)
    # Sampling and noise draw from OS entropy, never the job's recorded seed: noise that anyone can
    # regenerate from the seed could be subtracted again and would protect nothing.
    rng = torch.Generator()
    rng.seed()
    data = torch.utils.data.TensorDataset(torch.tensor(diffs, dtype=torch.float32))
    loader = torch.utils.data.DataLoader(data, batch_size=min(dp.batch_size, n), generator=rng)
    head = torch.nn.Linear(diffs.shape[1], 1, bias=False)
    torch.nn.init.zeros_(head.weight)
    optimizer = torch.optim.SGD(head.parameters(), lr=dp.learning_rate, weight_decay=weight_decay)
    # Opacus warns on every run about the RNG (see above) and its accountant's float edge cases, and torch
    # about the backward hook Opacus installs; none of it is actionable here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant=ACCOUNTANT)
        try:
            head, optimizer, loader = engine.make_private_with_epsilon(
                module=head,
                optimizer=optimizer,
                data_loader=loader,
                target_epsilon=dp.epsilon,
                target_delta=delta,
                epochs=dp.epochs,
                max_grad_norm=dp.max_grad_norm,
                noise_generator=rng,
            )
        except ValueError as exc:  # Opacus found no noise level that meets the budget
            raise BadRequest(
                f"ε={dp.epsilon:g} cannot be met with {dp.epochs} epochs over {n} pairs ({exc}) — raise "
                "epsilon or lower epochs",
                param="epsilon",
            ) from exc
        losses: list[float] = []
        steps = 0
        for _ in range(dp.epochs):
            for (batch,) in loader:
                optimizer.zero_grad()
                loss = torch.nn.functional.softplus(-head(batch)).mean()
                loss.backward()
                optimizer.step()
                steps += 1
                if len(batch):  # Poisson sampling may draw an empty batch; the step still adds noise
                    losses.append(float(loss.detach()))
        spent_epsilon = float(engine.get_epsilon(delta))
    w = head._module.weight.detach().numpy()[0].copy()
    spent = {
        "epsilon": round(spent_epsilon, 4),
        "delta": delta,
        "target_epsilon": dp.epsilon,
        "max_grad_norm": dp.max_grad_norm,
        "noise_multiplier": round(float(optimizer.noise_multiplier), 4),
        "sample_rate": round(float(loader.sample_rate), 6),
        "steps": steps,
        "accountant": ACCOUNTANT,
        "unit": "preference pair",
    }
    return w, {
        "privacy": spent,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
    }
