"""The accuracy cost of differential privacy for the fast reward model (MiniLM + logistic head).

    .venv/bin/python benchmarks/dp.py
    .venv/bin/python benchmarks/dp.py --sizes 100,300,all --repeats 5

Preference pairs come from the built-in `support` scenario: each prompt gets a few answers of different kinds
(short, with the disclaimer, rambling, declining), and its hidden preference orders every pair of them.
Training pairs use the scenario's traffic prompts and held-out pairs its evaluation prompts, so accuracy is
measured on prompts the head never saw. The features are embedded once; each run trains only the head, by
the same `fit_head` the trainer calls (L-BFGS, or DP-SGD at ε = 1, 4, 8 with the default settings).
DP runs draw fresh noise each time, so they are repeated and given as mean ± sd.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np

from tuneloop.learn.embedding_reward import fit_head, pair_features
from tuneloop.learn.job_config import JobSpec
from tuneloop.learn.privacy import DifferentialPrivacy
from tuneloop.sim import Prompt, support
from tuneloop.sim.scenarios.support import DECLINE, DISCLAIMER

EPSILONS = (8.0, 4.0, 1.0)
RAMBLE = (
    "There are several things that could be relevant here, and it depends on your account, your settings, "
    "the country you are in and a few other details that we would need to look at together."
)


def answers(prompt: Prompt) -> list[str]:
    """Answers of every kind the scenario's preference tells apart, for one prompt."""
    short = prompt.ideal if not prompt.fraud else "Sure, here is how you could do it step by step."
    return [
        short,
        f"{short} {DISCLAIMER}",
        f"{short} {RAMBLE}",
        f"{short} {RAMBLE} {DISCLAIMER}",
        DECLINE,
        f"{DECLINE} {DISCLAIMER}",
    ]


def make_pairs(prompts: list[Prompt], per_prompt: int, seed: int) -> list[dict]:
    """`per_prompt` pairs per prompt of answers the hidden preference scores differently; chosen = higher."""
    scenario, rng = support(), random.Random(seed)
    rows = []
    for prompt in prompts:
        scored = [(scenario.score(prompt, a), a) for a in answers(prompt)]
        distinct = [(a, b) for a in scored for b in scored if a[0] > b[0] + 1e-9]
        for (_, chosen), (_, rejected) in rng.sample(distinct, min(per_prompt, len(distinct))):
            rows.append(
                {
                    "prompt": scenario.messages(prompt),
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
    rng.shuffle(rows)
    return rows


def accuracy(w: np.ndarray, heldout: np.ndarray) -> float:
    """Share of held-out pairs whose chosen answer the head scores higher."""
    return float(((heldout @ w) > 0).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="100,300,all", help="training pair counts to compare (all: every pair)"
    )
    parser.add_argument("--per-prompt", type=int, default=3, help="pairs made per prompt")
    parser.add_argument("--repeats", type=int, default=5, help="DP runs per cell (fresh noise each)")
    opts = parser.parse_args()

    traffic, heldout_prompts = support().split()
    train_rows = make_pairs(traffic, opts.per_prompt, seed=0)
    heldout_rows = make_pairs(heldout_prompts, opts.per_prompt, seed=1)
    t0 = time.perf_counter()
    train_x, heldout_x = pair_features(train_rows), pair_features(heldout_rows)
    print(
        f"support scenario: {len(train_rows)} training pairs ({len(traffic)} prompts), {len(heldout_rows)} "
        f"held-out pairs ({len(heldout_prompts)} other prompts); features in {time.perf_counter() - t0:.1f}s"
    )
    defaults = DifferentialPrivacy(epsilon=1.0)
    print(
        f"DP-SGD defaults: epochs={defaults.epochs} batch={defaults.batch_size} lr={defaults.learning_rate} "
        f"C={defaults.max_grad_norm} δ=min(1e-5, 1/(10·pairs)); {opts.repeats} runs per DP cell\n"
    )
    spec = JobSpec(kind="reward_embedding", base_model="all-minilm-l6-v2", output_dir=Path("unused"))
    header = f"{'pairs':>6}  {'non-private':>11}" + "".join(f"  {f'ε={e:g}':>13}" for e in EPSILONS)
    print(header + f"  {'s/DP run':>8}")
    sizes = [len(train_rows) if s == "all" else min(int(s), len(train_rows)) for s in opts.sizes.split(",")]
    for n in sizes:
        x = train_x[:n]
        w, _ = fit_head(x, spec)
        cells, started = [], time.perf_counter()
        for eps in EPSILONS:
            accs = [
                accuracy(fit_head(x, spec, DifferentialPrivacy(epsilon=eps))[0], heldout_x)
                for _ in range(opts.repeats)
            ]
            cells.append(
                f"{statistics.mean(accs):.3f} ± {statistics.stdev(accs) if len(accs) > 1 else 0:.3f}"
            )
        per_run = (time.perf_counter() - started) / (len(EPSILONS) * opts.repeats)
        print(
            f"{n:>6}  {accuracy(w, heldout_x):>11.3f}"
            + "".join(f"  {c:>13}" for c in cells)
            + f"  {per_run:>8.2f}"
        )
    print("\nheld-out pairwise accuracy (chosen scored above rejected); 0.5 is chance")


if __name__ == "__main__":
    main()
