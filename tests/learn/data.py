"""Small synthetic training sets for the learn tests."""

from __future__ import annotations

TOPICS = [
    "tea",
    "rivers",
    "chess",
    "bread",
    "stars",
    "bikes",
    "owls",
    "paint",
    "clocks",
    "snow",
    "maps",
    "jazz",
]


def preference_rows(n: int) -> list[dict]:
    """Separable pairs: a helpful, polite answer is always chosen over a curt refusal."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Can you tell me something about {topic}? ({i})"}],
                "chosen": [
                    {"role": "assistant", "content": f"Happy to help! Here is a short note on {topic}."}
                ],
                "rejected": [{"role": "assistant", "content": "No. Go away, figure it out yourself."}],
            }
        )
    return rows


def kto_rows(n: int) -> list[dict]:
    """Unpaired labels: the same good and bad answers as `preference_rows`, alternating."""
    rows = []
    for i, pair in enumerate(preference_rows(n)):
        good = i % 2 == 0
        rows.append(
            {"prompt": pair["prompt"], "completion": pair["chosen" if good else "rejected"], "label": good}
        )
    return rows


GOOD = [
    "Sure! {t} is a lovely subject; here are three friendly facts about {t}.",
    "Great question. Let me explain {t} step by step, clearly and kindly.",
    "Happy to help with {t}: here is a short, accurate summary.",
    "Of course. Here is a helpful overview of {t}, with an example.",
]
BAD = [
    "No. Figure out {t} yourself.",
    "I don't care about {t}, stop asking.",
    "Whatever. {t} is boring and so is this question.",
    "Not my problem. Go away.",
]


def varied_preference_rows(n: int) -> list[dict]:
    """Separable pairs with varied wording: a helpful answer beats a rude one, across many topics."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Please explain {topic} to me."}],
                "chosen": [{"role": "assistant", "content": GOOD[i % len(GOOD)].format(t=topic)}],
                "rejected": [{"role": "assistant", "content": BAD[(i // 2) % len(BAD)].format(t=topic)}],
            }
        )
    return rows
