"""`two-tenants`: one server, one prompt pool, two tenants whose users want opposite things — `concise`
(one short sentence) and `detailed` (a sentence, then numbered steps). Each tenant's adapter should move
its own satisfaction without touching the other's.
"""

from __future__ import annotations

import re

from tuneloop.sim.scenario import Behaviour, Prompt, Scenario, Topic, ramp, words

SYSTEM_PROMPT = "You are a helpful assistant."
_LIST_LINE = re.compile(r"^[^\S\n]*(\d+[.)]|[-*•])\s+\S", re.MULTILINE)
_OPENERS = {"opener": ("", "Quick question: ", "Hi! ")}


def _topic(name: str, phrasings: tuple[str, ...], slot: str, values: tuple[str, ...], short: str, steps: str):
    # The ideal carries both forms, split on "|": each tenant's edit keeps the form its users prefer.
    return Topic(
        name, tuple("{opener}" + p for p in phrasings), f"{short}|{steps}", {slot: values, **_OPENERS}
    )


TOPICS = (
    _topic(
        "clean",
        (
            "How do I clean a {item}?",
            "What's the best way to clean a {item}?",
            "Any tips for cleaning a {item}?",
        ),
        "item",
        ("cast iron pan", "coffee maker", "laptop keyboard", "microwave", "oven", "kettle", "yoga mat"),
        "Wipe the {item} with warm soapy water and dry it well.",
        "1. Unplug or empty the {item}.\n2. Wipe it with warm soapy water.\n3. Rinse and dry it completely.",
    ),
    _topic(
        "learn",
        ("How do I learn {skill} as a beginner?", "What's a good way to start learning {skill}?"),
        "skill",
        ("Python", "Spanish", "guitar", "chess", "drawing", "touch typing", "photography"),
        "Practice {skill} for 20 minutes a day with one beginner course.",
        "1. Pick one beginner course for {skill}.\n2. Practice 20 minutes every day.\n"
        "3. Review what you learned each week.",
    ),
    _topic(
        "save",
        ("How can I save money on {expense}?", "Any tips to spend less on {expense}?"),
        "expense",
        ("groceries", "electricity", "travel", "phone bills", "eating out", "gifts"),
        "Set a monthly budget for {expense} and compare prices before you pay.",
        "1. Track what you spend on {expense} for a month.\n2. Set a monthly budget.\n"
        "3. Compare prices before every purchase.",
    ),
    _topic(
        "prepare",
        ("How do I prepare for a {event}?", "What should I do the week before a {event}?"),
        "event",
        ("job interview", "marathon", "exam", "long flight", "presentation", "camping trip"),
        "Make a checklist for the {event} and rehearse the hard parts early.",
        "1. Write a checklist for the {event}.\n2. Rehearse the hardest part early.\n"
        "3. Rest well the night before.",
    ),
    _topic(
        "habit",
        ("How do I start {habit}?", "How can I stick with {habit}?"),
        "habit",
        ("running", "meditating", "journaling", "reading more", "waking up early", "drinking more water"),
        "Start {habit} at a fixed time daily and keep the first sessions tiny.",
        "1. Pick a fixed time for {habit}.\n2. Keep the first sessions tiny.\n3. Track your streak.",
    ),
    _topic(
        "fix",
        ("How do I fix a {problem}?", "What can I do about a {problem}?"),
        "problem",
        ("slow Wi-Fi connection", "leaking tap", "squeaky door", "frozen laptop", "flat bike tyre"),
        "Find the part causing the {problem} and replace or reset it.",
        "1. Find what causes the {problem}.\n2. Reset or tighten that part.\n3. Replace it if it is worn.",
    ),
)

FOLLOWUPS_CONCISE = ("Too long, just the answer please.", "Can you say that in one sentence?")
FOLLOWUPS_DETAILED = ("Can you give me the steps?", "That's too short, can you explain more?")


def list_lines(answer: str) -> int:
    """Number of numbered or bulleted lines in `answer`."""
    return len(_LIST_LINE.findall(answer))


def concise_preference(prompt: Prompt, answer: str) -> float:
    """Users of the concise tenant: one short sentence, no lists."""
    n = words(answer)
    return 0.75 * (ramp(n, 15, 35) if n >= 3 else 0.0) + 0.25 * (list_lines(answer) == 0)


def detailed_preference(prompt: Prompt, answer: str) -> float:
    """Users of the detailed tenant: a longer answer laid out as steps."""
    steps = list_lines(answer)
    return 0.5 * (1.0 - ramp(words(answer), 8, 28)) + 0.5 * min(1.0, steps / 3)


def two_tenants(seed: int = 0, behaviour: Behaviour | None = None) -> dict[str, Scenario]:
    """The two tenants' scenarios by tenant name; same prompts (same seed), opposite preferences."""
    common = {"system_prompt": SYSTEM_PROMPT, "topics": TOPICS, "max_tokens": 64, "seed": seed}
    behaviour = behaviour or Behaviour()
    return {
        "concise": Scenario(
            name="two-tenants",
            preference=concise_preference,
            ideal=lambda p: p.ideal.split("|")[0],
            followups=FOLLOWUPS_CONCISE,
            behaviour=behaviour,
            **common,
        ),
        "detailed": Scenario(
            name="two-tenants",
            preference=detailed_preference,
            ideal=lambda p: "\n".join(p.ideal.split("|")),
            followups=FOLLOWUPS_DETAILED,
            behaviour=behaviour,
            **common,
        ),
    }
