"""Simulated scored groups: rows shaped like ``coact-verl score`` output (with gold), for routing research and tests.

Prompts come from topics; each topic has a skill level and a tendency to a shared confident wrong answer,
so some topics produce self-consistent wrong majorities (unanimous ones included). Prompt texts draw from
a topic-specific vocabulary, so the hashing embedder places a topic's prompts close together.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def simulate_rows(
    n_prompts: int,
    n_samples: int,
    seed: int = 0,
    topics: int = 12,
    skill: tuple[float, float] = (2.0, 2.0),
    confident_wrong: tuple[float, float] = (1.0, 1.5),
    task: str = "gsm8k",
) -> list[dict[str, Any]]:
    """``n_prompts`` rows with ``id``, ``prompt``, ``task``, ``n``, ``cluster_sizes``, ``agreement``,
    ``majority_correct``, ``gold_cluster`` (the ``score`` fields the router reads).

    Args:
        n_prompts: rows to draw.
        n_samples: responses per prompt (n).
        seed: seeds everything.
        topics: topics; each has a skill (P(a response is right) ~ Beta(``skill``)) and a tendency to one shared
            confident wrong answer (~ Beta(``confident_wrong``)).
        task: the rows' answer format.
    """
    rng = np.random.default_rng(seed)
    topic_skill = rng.beta(*skill, size=topics)
    topic_conf = rng.beta(*confident_wrong, size=topics)
    vocab = [[f"w{t}x{j}" for j in range(30)] for t in range(topics)]
    rows = []
    for i in range(n_prompts):
        t = int(rng.integers(topics))
        p = float(np.clip(rng.normal(topic_skill[t], 0.15), 0.0, 1.0))
        answers = []
        for _ in range(n_samples):
            u = rng.random()
            if u < p:
                answers.append("C")
            elif rng.random() < topic_conf[t]:
                answers.append("W1")
            elif rng.random() < 0.4:
                answers.append("W2")
            else:
                answers.append(f"U{rng.integers(10**6)}")
        counts = Counter(answers)
        order = sorted(counts, key=lambda a: (-counts[a], answers.index(a)))
        sizes = [counts[a] for a in order]
        words = " ".join(rng.choice(vocab[t], size=12).tolist())
        rows.append(
            {
                "id": f"q{i}",
                "prompt": f"{words} {int(rng.integers(1000))}",
                "task": task,
                "n": n_samples,
                "cluster_sizes": sizes,
                "cluster_answers": order,
                "agreement": sizes[0] / n_samples,
                "majority_correct": order[0] == "C",
                "gold_cluster": order.index("C") if "C" in counts else -1,
            }
        )
    return rows
