"""`code-assistant`: a Python team's coding assistant. Developers accept, copy or edit the code they get,
and their CI posts a `tests_passed` outcome for every answer they used: the CI type-checks the code and runs
the team's hidden tests for the task on it (`ci_report` writes the run as JUnit XML, the file a real CI
would hand to `tuneloop outcome --from-junit` or `Client.report_outcome`).

The team's conventions are the hidden preference: the answer is a fenced Python code block whose functions
are fully type-hinted, with at most a line of explanation. Hidden score = 0.25·fenced block + 0.35·type
hints + 0.4·little prose (≤ 12 words outside the code, none by 30). The base model writes untyped code
inside a paragraph of explanation (0.36 on 12 held-out prompts at temperature 0); the edits and the CI
outcome show the form, which a LoRA learns as it learns support's disclaimer.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
from xml.sax.saxutils import quoteattr

from tuneloop.sim.scenario import Behaviour, Prompt, Scenario, Topic, ramp, words

SYSTEM_PROMPT = "You are the coding assistant of a Python team. Answer the developer's request."
FENCE = "```"
_BLOCK = re.compile(r"```[a-zA-Z0-9_+-]*\n(.*?)(?:```|\Z)", re.DOTALL)
_DEF = re.compile(r"^[^\S\n]*def\s+\w+\s*\((?P<params>[^)]*)\)\s*(?P<ret>->\s*[^:]+)?:", re.MULTILINE)

FIELDS = ("price", "amount", "weight", "score", "duration", "quantity", "cost", "distance")
LIMITS = ("0", "10", "100", "-1", "42", "3.5", "1000")
EXTENSIONS = (".txt", ".csv", ".log", ".md", ".py", ".json", ".tsv")
THINGS = ("emails", "names", "ids", "urls", "tags", "paths", "hosts", "labels")
DOCUMENTS = ("sentence", "paragraph", "log line", "tweet", "title", "comment", "headline")
ITEMS = ("product", "user", "order", "city", "player")
SIZES = ("2", "3", "5", "10", "100", "50", "8")
EVENTS = ("birthday", "deadline", "launch", "renewal", "holiday", "release", "exam")
SLOT_OPTIONS = {"field": FIELDS, "limit": LIMITS, "ext": EXTENSIONS, "size": SIZES}


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


# The team's hidden tests per topic: (name, Python source) run against `fn`, the last function the answer's
# code defines, with the prompt's slot values in `slot`. `call` retries with the slot value as one more
# argument, for an answer that made the prompt's constant a required parameter.
HIDDEN_TESTS: dict[str, tuple[tuple[str, str], ...]] = {
    "sum_field": (
        ("sums", "assert call([{slot['field']: 1}, {slot['field']: 2.5}]) == 3.5"),
        ("empty", "assert call([]) == 0"),
    ),
    "filter_numbers": (
        ("keeps_above", "L = float(slot['limit'])\nassert list(call([L - 1, L + 1, L], L)) == [L + 1]"),
    ),
    "count_lines": (
        (
            "counts",
            "open('sample' + slot['ext'], 'w').write('a\\nb\\nc\\n')\n"
            "assert call('sample' + slot['ext']) == 3",
        ),
    ),
    "dedupe": (("keeps_order", "assert list(call(['b', 'a', 'b', 'c', 'a'])) == ['b', 'a', 'c']"),),
    "word_counts": (("counts", "assert dict(call('a b a')) == {'a': 2, 'b': 1}"),),
    "top_item": (("largest", "f = slot['field']\nassert call([{f: 1}, {f: 3}, {f: 2}]) == {f: 3}"),),
    "chunks": (
        (
            "splits",
            "n = int(slot['size'])\nitems = list(range(2 * n + 1))\n"
            "assert [list(c) for c in call(items, n)] == [items[:n], items[n : 2 * n], items[2 * n :]]",
        ),
    ),
    "days_until": (
        (
            "counts_days",
            "from datetime import date, timedelta\nassert call(date.today() + timedelta(days=3)) == 3",
        ),
    ),
    "palindrome": (
        ("true", "assert call('Never odd or even') is True"),
        ("false", "assert not call('Python')"),
    ),
}

# Runs in a subprocess with CPU, memory, process and file limits (the team's CI box): defines the answer's
# code, then runs each test, printing one JSON line of {test: error or null}.
_CI_HARNESS = r"""
import json, resource, sys, types
for limit, value in ((resource.RLIMIT_CPU, 3), (resource.RLIMIT_AS, 1 << 30), (resource.RLIMIT_NPROC, 64),
                     (resource.RLIMIT_FSIZE, 1 << 20)):
    resource.setrlimit(limit, (value, value))
job = json.load(sys.stdin)
results = {}
namespace = {"__name__": "solution"}
try:
    exec(compile(job["code"], "solution.py", "exec"), namespace)
    functions = [v for v in namespace.values() if isinstance(v, types.FunctionType)]
    fn = functions[-1] if functions else None
except BaseException as exc:
    fn, failure = None, f"{type(exc).__name__}: {exc}"
else:
    failure = "no function defined"
def call(*args):
    try:
        return fn(*args[:1])
    except TypeError:
        return fn(*args)
for name, source in job["tests"]:
    if fn is None:
        results[name] = failure
        continue
    try:
        exec(source, {"call": call, "slot": job["slot"]})
        results[name] = None
    except BaseException as exc:
        results[name] = f"{type(exc).__name__}: {exc}"[:200]
print(json.dumps(results))
"""


def _slot(prompt: Prompt) -> dict[str, str]:
    """The slot values the prompt was made with, read back from its text (the longest option that fits)."""
    values = {}
    for name, options in SLOT_OPTIONS.items():
        found = [o for o in options if o in prompt.text]
        if found:
            values[name] = max(found, key=len)
    return values


def run_ci(prompt: Prompt, answer: str) -> dict[str, str | None]:
    """The team's CI on the answer's code: the type check and every hidden test of its topic, each mapped
    to its failure message (None: passed)."""
    code = code_of(answer)
    tests = HIDDEN_TESTS.get(prompt.topic, ())
    results = {"type_hints": None if typed(code) == 1.0 else "functions are not fully type-hinted"}
    if not code.strip():
        return {**results, "type_hints": "no code block", **{n: "no code block" for n, _ in tests}}
    return {**results, **_run_tests(code, json.dumps(tests), json.dumps(_slot(prompt), sort_keys=True))}


@functools.lru_cache(maxsize=4096)  # the same code for the same task runs once (users get equal answers)
def _run_tests(code: str, tests: str, slot: str) -> dict[str, str | None]:
    job = json.dumps({"code": code, "tests": json.loads(tests), "slot": json.loads(slot)})
    with tempfile.TemporaryDirectory(prefix="sim-ci-") as work:
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", _CI_HARNESS],
                input=job.encode(),
                capture_output=True,
                cwd=work,
                env={"PATH": os.defpath, "HOME": work},
                timeout=10,
                start_new_session=True,
                check=False,
            )
            return json.loads(done.stdout.decode().strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            return {name: "CI run timed out or crashed" for name, _ in json.loads(tests)}


def ci_passes(prompt: Prompt, answer: str) -> bool:
    """The team's CI: type checking (every function fully hinted) and the task's hidden tests."""
    return all(failure is None for failure in run_ci(prompt, answer).values())


def ci_report(prompt: Prompt, answer: str) -> str:
    """The CI run of the answer as a JUnit XML report (one testcase per check)."""
    results = run_ci(prompt, answer)
    cases = "".join(
        f"<testcase classname={quoteattr(prompt.topic)} name={quoteattr(name)}"
        + ("/>" if failure is None else f"><failure message={quoteattr(failure)}/></testcase>")
        for name, failure in results.items()
    )
    failures = sum(failure is not None for failure in results.values())
    return f'<testsuite name="ci" tests="{len(results)}" failures="{failures}">{cases}</testsuite>'


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
