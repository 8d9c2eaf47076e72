"""Held-out split by prompt cluster: near-duplicate prompts always land in the same split."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tuneloop.signals.records import prompt_text, row_prompt


def prompt_clusters(
    texts: Iterable[str], vectors: Mapping[str, np.ndarray] | None, threshold: float, block: int = 1024
) -> dict[str, str]:
    """A cluster key per distinct prompt text: connected components of the "similarity >= threshold" graph.

    Components (not greedy centres) make the guarantee transitive: no two prompts in different clusters are
    near-duplicates. The key is the smallest text hash in the cluster, so it does not depend on input order.
    Without vectors, only identical texts share a cluster.
    """
    distinct = sorted(set(texts))
    parent = list(range(len(distinct)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if vectors is not None and distinct:
        matrix = np.stack([np.asarray(vectors[t], dtype=np.float32) for t in distinct])
        for start in range(0, len(distinct), block):
            sims = matrix[start : start + block] @ matrix.T
            for a, b in zip(*np.nonzero(sims >= threshold - 1e-6), strict=True):
                ra, rb = find(start + int(a)), find(int(b))
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    digests = [hashlib.sha256(t.encode()).hexdigest() for t in distinct]
    key: dict[int, str] = {}
    for i, digest in enumerate(digests):
        root = find(i)
        key[root] = min(key.get(root, digest), digest)
    return {t: key[find(i)] for i, t in enumerate(distinct)}


MAX_HELDOUT_FRACTION = 0.5  # raising the held-out share for the gate never takes more than half the pairs


def _draw(cluster: str, seed: int) -> float:
    return int.from_bytes(hashlib.sha256(f"{seed}:{cluster}".encode()).digest()[:8], "big") / 2**64


def split_of(cluster: str, fraction: float, seed: int) -> str:
    """The split of a prompt cluster: "heldout" for a stable, seeded `fraction` of clusters, else "train"."""
    return "heldout" if _draw(cluster, seed) < fraction else "train"


def heldout_fraction(
    pair_clusters: Sequence[str],
    fraction: float,
    seed: int,
    min_pairs: int,
    clusters: Iterable[str] = (),
    min_clusters: int = 0,
) -> float:
    """`fraction`, raised just enough that the pairs hold out `min_pairs` of themselves and the prompt
    `clusters` (every dataset's) `min_clusters` distinct ones, at most half: a small snapshot still gives
    the gate pairs to judge and prompts to answer, a large one keeps the configured share."""
    return max(
        _enough(sorted(_draw(c, seed) for c in pair_clusters), fraction, min_pairs),
        _enough(sorted(_draw(c, seed) for c in set(clusters)), fraction, min_clusters),
    )


def _enough(draws: list[float], fraction: float, minimum: int) -> float:
    """The least fraction ≥ `fraction` (≤ MAX_HELDOUT_FRACTION) under which `minimum` of `draws` fall."""
    if not draws or sum(d < fraction for d in draws) >= minimum:
        return fraction
    needed = draws[min(minimum, len(draws)) - 1]
    return max(fraction, min(float(np.nextafter(needed, 1.0)), MAX_HELDOUT_FRACTION))


def split_rows(
    datasets: Mapping[str, Sequence[dict[str, Any]]],
    vectors: Mapping[str, np.ndarray] | None,
    threshold: float,
    fraction: float,
    seed: int,
    min_heldout_pairs: int = 0,
    min_heldout_prompts: int = 0,
) -> dict[str, list[dict[str, Any]]]:
    """Copies of every dataset's rows with a `split` column; clusters are shared across the datasets."""
    texts = [prompt_text(row_prompt(row)) for rows in datasets.values() for row in rows]
    clusters = prompt_clusters(texts, vectors, threshold)
    of = {name: [clusters[prompt_text(row_prompt(row))] for row in rows] for name, rows in datasets.items()}
    everything = [c for name in of for c in of[name]]
    fraction = heldout_fraction(
        of.get("pairs", []), fraction, seed, min_heldout_pairs, everything, min_heldout_prompts
    )
    return {
        name: [{**row, "split": split_of(c, fraction, seed)} for row, c in zip(rows, of[name], strict=True)]
        for name, rows in datasets.items()
    }
