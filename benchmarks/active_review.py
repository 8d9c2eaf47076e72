"""Reviewer labels chosen by the review queue against as many labels chosen at random.

    .venv/bin/python benchmarks/active_review.py
    .venv/bin/python benchmarks/active_review.py --budget 100 --runs 10 --noise 0.05

The pool is what a pairwise review task sees in logged traffic: for each of the `support` scenario's traffic
prompts, `--per-prompt` pairs of answers drawn as its base model answers (80 % rambling, 2 % with the
disclaimer; the kinds are benchmarks/dp.py's), keeping pairs its hidden preference tells apart.
Held-out pairs are every such pair of the scenario's held-out prompts, each kind alike: how well the reward
model ranks answers the policy may learn to give. A simulated reviewer labels a pair by the hidden
preference (wrong with probability `--noise`).

Both arms start from the same `--seed-labels` random labels; then the random arm labels `--budget` more
pairs drawn at random, and the queue arm labels them in rounds of `--round`, each round the pairs that
`review.queue.rank_pairs` puts first under the reward model trained on the labels so far (the most
uncertain, spread over prompts). The reward model is the fast one (MiniLM features, the trainer's
`fit_head`); accuracy is on the held-out pairs. Prints both arms' accuracy and gain over the seed labels,
per run and as mean ± sd.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from dp import answers  # the answer kinds the dp benchmark scores

from tuneloop.learn.embedding_reward import features, fit_head
from tuneloop.learn.job_config import JobSpec
from tuneloop.review.queue import rank_pairs
from tuneloop.sim import Prompt, support

Pair = tuple[list[dict], str, str, float]  # prompt messages, answer a, answer b, P(reviewer prefers a)


# How often the support scenario's base model gives each of `answers()`' kinds (short, short + disclaimer,
# rambling, rambling + disclaimer, a decline, a decline + disclaimer): it mostly rambles and rarely adds the
# disclaimer, which is why its hidden satisfaction starts near 0.33 (README, the demo's first turn).
TRAFFIC_KINDS = (0.1, 0.02, 0.8, 0.02, 0.04, 0.02)


def every_pair(prompts: list[Prompt]) -> list[Pair]:
    """Every pair of one prompt's answers whose hidden scores differ, with the preferred one known."""
    scenario = support()
    out = []
    for prompt in prompts:
        scored = [(scenario.score(prompt, a), a) for a in answers(prompt)]
        for i, (sa, a) in enumerate(scored):
            for sb, b in scored[i + 1 :]:
                if abs(sa - sb) > 1e-9:
                    out.append((scenario.messages(prompt), a, b, 1.0 if sa > sb else 0.0))
    return out


def traffic_pairs(prompts: list[Prompt], per_prompt: int, seed: int) -> list[Pair]:
    """Pairs as logged traffic shows them: answers drawn by TRAFFIC_KINDS, kept if the preference differs."""
    scenario, rng = support(), random.Random(seed)
    out: dict[tuple[str, str, str], Pair] = {}
    for prompt in prompts:
        kinds = answers(prompt)
        for _ in range(per_prompt):
            a, b = rng.choices(kinds, weights=TRAFFIC_KINDS, k=2)
            sa, sb = scenario.score(prompt, a), scenario.score(prompt, b)
            if abs(sa - sb) > 1e-9:
                out[(prompt.text, a, b)] = (scenario.messages(prompt), a, b, 1.0 if sa > sb else 0.0)
    return list(out.values())


class FeatureScorer:
    """The fast reward model over features embedded once (the queue's `Scorer` interface)."""

    temperature = 1.0

    def __init__(self, phi: dict[tuple[str, str], np.ndarray], w: np.ndarray) -> None:
        self.phi, self.w = phi, w

    def score_batch(self, items: list[tuple[list[dict], str]]) -> list[float]:
        return [float(self.phi[(p[-1]["content"], text)] @ self.w) for p, text in items]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget", type=int, default=100, help="reviewer labels each arm spends")
    parser.add_argument("--seed-labels", type=int, default=10, help="random labels both arms start from")
    parser.add_argument("--round", type=int, default=10, help="labels per queue refill (the head retrains)")
    parser.add_argument("--noise", type=float, default=0.05, help="share of reviewer labels that are wrong")
    parser.add_argument("--runs", type=int, default=10, help="independent runs (seeds)")
    parser.add_argument("--per-prompt", type=int, default=8, help="answer pairs drawn per traffic prompt")
    opts = parser.parse_args()

    traffic, heldout_prompts = support().split()
    candidates, heldout = traffic_pairs(traffic, opts.per_prompt, seed=0), every_pair(heldout_prompts)
    started = time.perf_counter()
    texts = {(p[-1]["content"], t): (p, t) for p, a, b, _ in candidates + heldout for t in (a, b)}
    keys = list(texts)
    phi = dict(zip(keys, features([texts[k] for k in keys]), strict=True))
    print(f"support scenario: {len(candidates)} candidate pairs ({len(traffic)} prompts), {len(heldout)} "
          f"held-out pairs ({len(heldout_prompts)} other prompts); features in "
          f"{time.perf_counter() - started:.0f} s")  # fmt: skip

    def diff(pair: Pair) -> np.ndarray:
        p, a, b, _ = pair
        return phi[(p[-1]["content"], a)] - phi[(p[-1]["content"], b)]

    heldout_x = np.array([diff(p) if p[3] else -diff(p) for p in heldout])
    spec = JobSpec(kind="reward_embedding", base_model="all-minilm-l6-v2", output_dir=Path("unused"))

    def train(labels: dict[int, bool]) -> np.ndarray:
        x = np.array([diff(candidates[i]) if a_won else -diff(candidates[i]) for i, a_won in labels.items()])
        return fit_head(x, spec)[0]

    def accuracy(w: np.ndarray) -> float:
        return float(((heldout_x @ w) > 0).mean())

    note = f"reviewer wrong {opts.noise:.0%} of the time"
    print(f"\n{opts.seed_labels} seed labels, then {opts.budget} more; {note}")
    print(
        f"{'run':>3}  {'seed only':>9}  {'random':>7}  {'queue':>7}  {'gain random':>11}  {'gain queue':>10}"
    )
    results = []
    for run in range(opts.runs):
        rng = random.Random(run)

        def review(i: int, rng: random.Random = rng) -> bool:
            """The simulated reviewer: whether answer a won, by the hidden preference, sometimes wrong."""
            return bool(candidates[i][3]) != (rng.random() < opts.noise)

        order = list(range(len(candidates)))
        rng.shuffle(order)
        seed = {i: review(i) for i in order[: opts.seed_labels]}
        base = accuracy(train(seed))
        randomly = dict(seed) | {
            i: review(i) for i in order[opts.seed_labels : opts.seed_labels + opts.budget]
        }
        queued = dict(seed)
        while len(queued) < opts.seed_labels + opts.budget:
            left = [i for i in range(len(candidates)) if i not in queued]
            scorer = FeatureScorer(phi, train(queued))
            ranked = rank_pairs(scorer, [candidates[i][:3] for i in left])
            take = min(opts.round, opts.seed_labels + opts.budget - len(queued))
            queued |= {left[j]: review(left[j]) for j in ranked[:take]}
        r, q = accuracy(train(randomly)), accuracy(train(queued))
        results.append((base, r, q))
        print(f"{run:>3}  {base:>9.3f}  {r:>7.3f}  {q:>7.3f}  {r - base:>+11.3f}  {q - base:>+10.3f}")

    def ms(values: list[float]) -> str:
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0:.3f}"

    base, rand, queue = ([row[k] for row in results] for k in range(3))
    print(f"\nheld-out accuracy after {opts.budget} labels: random {ms(rand)}, queue {ms(queue)} "
          f"(seed labels alone {ms(base)})")  # fmt: skip
    gains = [q - r for _, r, q in results]
    per_run = ", ".join(f"{g * 100:+.1f}" for g in gains)
    gain = statistics.mean(gains) * 100
    print(f"the queue's labels raise accuracy {gain:+.1f} points more than random ones (per run: {per_run})")


if __name__ == "__main__":
    main()
