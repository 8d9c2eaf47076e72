"""`code-assistant`: a Python team's coding assistant. Developers accept, copy or edit the code they get,
and their CI posts a `tests_passed` outcome for every answer they used.

The team's conventions are the hidden preference: the answer is a fenced Python code block whose functions
are fully type-hinted, with at most a line of explanation. Hidden score = 0.25·fenced block + 0.35·type
hints + 0.4·little prose (≤ 12 words outside the code, none by 30). The base model writes untyped code
inside a paragraph of explanation (0.36 on 12 held-out prompts at temperature 0); the edits and the CI
outcome show the form, which a LoRA learns as it learns support's disclaimer.
"""

from __future__ import annotations

import re

from tuneloop.sim.scenario import Behaviour, Prompt, Scenario, Topic, ramp, words

SYSTEM_PROMPT = "You are the coding assistant of a Python team. Answer the developer's request."
FENCE = "```"
_BLOCK = re.compile(r"```[a-zA-Z0-9_+-]*\n(.*?)(?:```|\Z)", re.DOTALL)
_DEF = re.compile(r"^\s*def\s+\w+\s*\((?P<params>[^)]*)\)\s*(?P<ret>->\s*[^:]+)?:", re.MULTILINE)

FIELDS = ("price", "amount", "weight", "score", "duration", "quantity", "cost", "distance")
LIMITS = ("0", "10", "100", "-1", "42", "3.5", "1000")
EXTENSIONS = (".txt", ".csv", ".log", ".md", ".py", ".json", ".tsv")
THINGS = ("emails", "names", "ids", "urls", "tags", "paths", "hosts", "labels")
DOCUMENTS = ("sentence", "paragraph", "log line", "tweet", "title", "comment", "headline")
ITEMS = ("product", "user", "order", "city", "player")
SIZES = ("2", "3", "5", "10", "100", "50", "8")
EVENTS = ("birthday", "deadline", "launch", "renewal", "holiday", "release", "exam")


def _ideal(code: str, explanation: str) -> str:
    """The team's form: the code in a fenced Python block, then one line."""
    return f"{FENCE}python\n{code}\n{FENCE}\n{explanation}"


TOPICS = (
    Topic(
        "sum_field",
        (
            "Write a Python function that returns the total {field} of a list of records.",
            "How do I sum the {field} of every record in a list of dicts?",
            "Give me a function to add up {field} across a list of dictionaries.",
        ),
        _ideal(
            'def total_{field}(records: list[dict]) -> float:\n    return sum(r["{field}"] for r in records)',
            "Sums the {field} of every record.",
        ),
        {"field": FIELDS},
    ),
    Topic(
        "filter_numbers",
        (
            "Write a Python function that keeps only the numbers greater than {limit} in a list.",
            "How do I filter a list down to the numbers above {limit}?",
            "I need a function that drops every number not greater than {limit} from a list.",
        ),
        _ideal(
            "def above_limit(numbers: list[float], limit: float = {limit}) -> list[float]:\n"
            "    return [n for n in numbers if n > limit]",
            "Keeps the numbers above the limit.",
        ),
        {"limit": LIMITS},
    ),
    Topic(
        "count_lines",
        (
            "Write a Python function that counts the lines in a {ext} file.",
            "How can I count how many lines a {ext} file has in Python?",
            "Give me a function returning the number of lines of a {ext} file.",
        ),
        _ideal(
            "def count_lines(path: str) -> int:\n    with open(path) as f:\n        return sum(1 for _ in f)",
            "Counts lines without loading the {ext} file into memory.",
        ),
        {"ext": EXTENSIONS},
    ),
    Topic(
        "dedupe",
        (
            "Write a Python function that removes duplicate {things} from a list but keeps the order.",
            "How do I dedupe a list of {things} while preserving order?",
            "Give me a function to drop repeated {things} from a list, first one wins.",
        ),
        _ideal(
            "def unique_{things}(items: list[str]) -> list[str]:\n    return list(dict.fromkeys(items))",
            "dict keeps the first of each in order.",
        ),
        {"things": THINGS},
    ),
    Topic(
        "word_counts",
        (
            "Write a Python function that counts how often each word appears in a {doc}.",
            "How do I get word frequencies for a {doc} in Python?",
            "Give me a function that maps each word of a {doc} to its count.",
        ),
        _ideal(
            "from collections import Counter\n\n\ndef word_counts(text: str) -> dict[str, int]:\n"
            "    return dict(Counter(text.lower().split()))",
            "Counts each lowercased word of the {doc}.",
        ),
        {"doc": DOCUMENTS},
    ),
    Topic(
        "top_item",
        (
            "Write a Python function that finds the {item} with the highest {field} in a list.",
            "How do I get the {item} dict with the largest {field}?",
            "Give me a function returning the {item} whose {field} is the biggest.",
        ),
        _ideal(
            'def top_{item}(items: list[dict]) -> dict:\n    return max(items, key=lambda x: x["{field}"])',
            "Returns the {item} with the highest {field}.",
        ),
        {"item": ITEMS, "field": FIELDS[:4]},
    ),
    Topic(
        "chunks",
        (
            "Write a Python function that splits a list into chunks of {size}.",
            "How do I break a list into pieces of {size} items each?",
            "Give me a function that batches a list {size} at a time.",
        ),
        _ideal(
            "def chunks(items: list, size: int = {size}) -> list[list]:\n"
            "    return [items[i : i + size] for i in range(0, len(items), size)]",
            "The last chunk may be shorter.",
        ),
        {"size": SIZES},
    ),
    Topic(
        "days_until",
        (
            "Write a Python function that returns how many days are left until a {event}.",
            "How do I compute the days remaining until a {event} date?",
            "Give me a function for the number of days until my {event}.",
        ),
        _ideal(
            "from datetime import date\n\n\ndef days_until(day: date) -> int:\n"
            "    return (day - date.today()).days",
            "Negative once the {event} has passed.",
        ),
        {"event": EVENTS},
    ),
    Topic(
        "palindrome",
        (
            "Write a Python function that checks whether a {doc} is a palindrome.",
            "How do I test if a {doc} reads the same backwards?",
            "Give me a function that tells whether a {doc} is the same reversed.",
        ),
        _ideal(
            "def is_palindrome(text: str) -> bool:\n"
            "    letters = [c.lower() for c in text if c.isalnum()]\n    return letters == letters[::-1]",
            "Ignores case, spaces and punctuation.",
        ),
        {"doc": DOCUMENTS},
    ),
)

FOLLOWUPS = (
    "Just the code please, with type hints.",
    "Can you add type hints?",
    "Too much explanation, I only need the function.",
    "Please put it in a code block.",
)


def code_of(answer: str) -> str:
    """The code inside the answer's fenced blocks (an unclosed block runs to the end: answers get cut)."""
    return "\n".join(_BLOCK.findall(answer))


def prose_of(answer: str) -> str:
    """The answer with its fenced code blocks taken out."""
    return _BLOCK.sub(" ", answer)


def typed(code: str) -> float:
    """How fully the functions in `code` are type-hinted: per def, half for the return annotation and half
    for annotating every parameter; 0 without a def."""
    found = list(_DEF.finditer(code))
    if not found:
        return 0.0
    scores = []
    for match in found:
        params = [p for p in _parameters(match["params"]) if p not in ("self", "cls", "*", "/")]
        annotated = all(":" in p for p in params)
        scores.append(0.5 * bool(match["ret"]) + 0.5 * annotated)
    return sum(scores) / len(scores)


def _parameters(text: str) -> list[str]:
    """A parameter list split on its top-level commas (`dict[str, int]` is one annotation)."""
    out, depth, current = [], 0, ""
    for char in text:
        depth += (char in "[({") - (char in "])}")
        if char == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += char
    return [p for p in (*out, current.strip()) if p]


def preference(prompt: Prompt, answer: str) -> float:
    """The team's hidden satisfaction with `answer`."""
    code = code_of(answer)
    has_block = bool(code.strip())
    brevity = ramp(words(prose_of(answer)), 12, 30)
    return 0.25 * has_block + 0.35 * typed(code) + 0.4 * brevity


def ci_passes(prompt: Prompt, answer: str) -> bool:
    """The team's CI: type checking (every function fully hinted) and tests, on the code as given."""
    code = code_of(answer)
    return bool(code.strip()) and typed(code) == 1.0


def code_assistant(seed: int = 0, behaviour: Behaviour | None = None) -> Scenario:
    """The code-assistant scenario: 300 developers, temperature 0.2 as a coding tool asks."""
    return Scenario(
        name="code-assistant",
        system_prompt=SYSTEM_PROMPT,
        topics=TOPICS,
        preference=preference,
        followups=FOLLOWUPS,
        outcome=("tests_passed", ci_passes),
        behaviour=behaviour
        or Behaviour(
            explicit=0.10,
            accept=0.6,
            copy=0.2,
            edit=0.15,
            regenerate=0.2,
            followup=0.3,
            escalate=0.0,
            abandon=0.1,
            repeat=0.15,
            dwell=1.0,
            pairwise=0.05,
            users=300,
        ),
        max_tokens=64,
        temperature=0.2,
        seed=seed,
    )
