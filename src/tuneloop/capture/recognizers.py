"""The Presidio recognizers behind redaction: Presidio's own, made offline, and ours for what they miss.

Imported only when the models load (it pulls in Presidio and spaCy), never at server start.
"""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Callable, Collection, Iterable
from typing import Any, NamedTuple

import regex  # type: ignore[import-untyped]
import tldextract
from presidio_analyzer import EntityRecognizer, Pattern, RecognizerResult
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    SpacyRecognizer,
    UsSsnRecognizer,
)
from spacy.lang.en.stop_words import STOP_WORDS

from tuneloop.capture import pii_patterns as p

# Our finds are decided by pattern and context; above spaCy's 0.85, so where a find of ours and a name from
# the model cover the same span (an obfuscated email read as a name), ours names it.
SCORE = 0.9
_WORD = regex.compile(r"[\p{L}\p{M}\p{N}]+")  # marks too: Thai and Hindi words hold them
_NOT_PHONE = frozenset(p.NOT_PHONE_WORDS)
# Two capitals in a row inside a mixed-case word: "OpenAI", "PostgreSQL", never "LaToya" or "McDonald".
_MIXED_CASE = regex.compile(r"\p{Ll}\p{L}*\p{Lu}{2}|\p{Lu}{2}\p{L}*\p{Ll}")
_PARTICLES = rf"(?:{p.alternation(p.NAME_PARTICLES)})(?:\s+(?:{p.alternation(p.NAME_PARTICLES)}))*"


def recognizers() -> list[Any]:
    """Every recognizer the analyzer runs, for the entities `redact.ENTITIES` names."""
    cards = GroupedCardRecognizer()
    return [
        OfflineEmailRecognizer(),
        RegexRecognizer(
            "EMAIL_ADDRESS", p.OBFUSCATED_EMAIL, "ObfuscatedEmail", validate=_obfuscated_email_ok
        ),
        RegexRecognizer("EMAIL_ADDRESS", p.IP_LITERAL_EMAIL, "IpLiteralEmail"),
        RegexRecognizer(
            "EMAIL_ADDRESS", p.LOCAL_HOST_EMAIL, "LocalHostEmail", context=p.MAIL_WORDS, window=6
        ),
        RegexRecognizer("EMAIL_ADDRESS", p.PRIVATE_TLD_EMAIL, "PrivateNetworkEmail"),
        GatedPhoneRecognizer(),
        # Numbers written "+CC ..." in any grouping, from regions phonenumbers is not asked about.
        RegexRecognizer("PHONE_NUMBER", p.INTERNATIONAL_PHONE, "InternationalPhone", validate=_digits(8, 15)),
        RegexRecognizer(
            "PHONE_NUMBER", p.NANP_PHONE, "NanpPhone", avoid=p.NOT_PHONE_WORDS, unless=p.CALL_WORDS
        ),
        RegexRecognizer(
            "PHONE_NUMBER",
            p.LOOSE_PHONE,
            "PhoneByContext",
            context=p.PHONE_WORDS,
            avoid=p.NOT_PHONE_WORDS,
            unless=p.CALL_WORDS,
            validate=_digits(7, 15),
        ),
        cards,
        RegexRecognizer("CREDIT_CARD", p.SPACED_DIGITS, "DigitByDigitCard", validate=cards.checksum),
        RegexRecognizer("ID_NUMBER", p.UK_NINO, "UkNino"),
        RegexRecognizer("ID_NUMBER", p.AADHAAR, "Aadhaar", validate=_verhoeff),
        RegexRecognizer("MAC_ADDRESS", p.MAC_ADDRESS, "MacAddress"),
        RegexRecognizer("MAC_ADDRESS", p.BARE_MAC_ADDRESS, "MacByContext", context=p.MAC_WORDS, window=4),
        RegexRecognizer(
            "ID_NUMBER",
            p.ID_NUMBER,
            "IdNumberByContext",
            context=p.ID_WORDS,
            avoid=p.NOT_ID_WORDS,
            window=4,
        ),
        IbanRecognizer(),
        SpacedIbanRecognizer(supported_entities=["IBAN_CODE"], name="SpacedIbanRecognizer"),
        IpRecognizer(),
        SsnRecognizer(),
        NamesRecognizer(),
        KnownNameRecognizer(),
        RegexRecognizer("PERSON", _introduced_name(), "IntroducedName"),
        RegexRecognizer("PERSON", _greeted_name(), "GreetedName"),
        RegexRecognizer("PERSON", _addressed_name(), "AddressedName"),
        RegexRecognizer("PERSON", _acting_name(), "ActingName"),
        RegexRecognizer("STREET_ADDRESS", p.street_address(p.COMMON_SUFFIXES, tail=False), "Street"),
        RegexRecognizer("STREET_ADDRESS", p.street_address(p.STREET_SUFFIXES, tail=True), "StreetCityState"),
        RegexRecognizer(
            "STREET_ADDRESS",
            p.street_address(p.STREET_SUFFIXES, tail=False),
            "StreetByContext",
            context=p.ADDRESS_WORDS,
            window=6,
        ),
        RegexRecognizer("STREET_ADDRESS", p.EUROPEAN_STREET, "EuropeanStreet"),
        RegexRecognizer("ZIP_CODE", p.STATE_ZIP, "StateZip"),
        RegexRecognizer("ZIP_CODE", p.UK_POSTCODE, "UkPostcode"),
        RegexRecognizer("ZIP_CODE", p.POSTCODE_TOWN, "PostcodeTown"),
        RegexRecognizer("ZIP_CODE", p.ZIP, "ZipByContext", context=["zip", "postal", "postcode"], window=3),
        RegexRecognizer(
            "DATE_OF_BIRTH", p.DATE, "DateOfBirth", context=["born", "birth", "dob", "bday"], window=6
        ),
        RegexRecognizer("AGE", p.AGE, "Age"),
    ]


class RegexRecognizer(EntityRecognizer):
    """Finds of `pattern` (its group `v` if it has one), kept where `context`, `avoid` and `validate` agree.

    `context`: one of these words (or a word they begin) is among the `window` words before the find;
    `avoid`: none of these words is, unless one of `unless` (or a word they begin) stands nearer the find
    ("your order, simply call 415-555-0134").
    """

    def __init__(
        self,
        entity: str,
        pattern: str,
        name: str,
        *,
        context: Iterable[str] = (),
        avoid: Iterable[str] = (),
        unless: Iterable[str] = (),
        window: int = 5,
        validate: Callable[[str], bool] | None = None,
    ) -> None:
        self.pattern = regex.compile(pattern)
        self.context_words = tuple(context)
        self.avoid_words = tuple(avoid)
        self.unless_words = tuple(unless)
        self.window = window
        self.validate = validate
        super().__init__(supported_entities=[entity], name=name)

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        results = []
        group = "v" if "v" in self.pattern.groupindex else 0
        for match in self.pattern.finditer(text):
            start, end = match.span(group)
            if start == end or (self.validate and not self.validate(text[start:end])):
                continue
            before = _words_before(text, start, self.window)
            if self.context_words and not any(_mentions(w, self.context_words, prefix=True) for w in before):
                continue
            if self.avoid_words and _avoided(before, self.avoid_words, self.unless_words):
                continue
            results.append(RecognizerResult(self.supported_entities[0], start, end, SCORE))
        return results


def _mentions(word: str, words: Collection[str], *, prefix: bool = False) -> bool:
    """`word` is one of `words` (with `prefix`, or begins with one); in scripts written without spaces a
    word is glued to its neighbours ("我的电话是": "my phone is"), so it is found inside the run."""
    found = word.startswith(tuple(words)) if prefix else word in words
    return found or (not word.isascii() and any(w in word for w in words if not w.isascii()))


def _avoided(before: list[str], avoid: Collection[str], unless: Collection[str]) -> bool:
    """One of `avoid` is among the words `before` a find with none of `unless` nearer the find."""
    for word in reversed(before):
        if _mentions(word, avoid):  # first: a run of a script without spaces may hold both ("電話で注文番号")
            return True
        if unless and _mentions(word, unless, prefix=True):
            return False
    return False


def _words_before(text: str, start: int, count: int) -> list[str]:
    """The last `count` words before `start`, lower-cased."""
    return [w.lower() for w in _WORD.findall(text[max(0, start - 80) : start])[-count:]]


@functools.cache
def plain_words() -> frozenset[str]:
    """English words that spell no census first name or common surname: Webster's, and the embedding
    model's whole WordPiece words for what came after 1934 ("email", "login")."""
    from tuneloop.signals.embeddings import model_dir

    vocab = (model_dir() / "vocab.txt").read_text(encoding="utf-8").split()
    return _websters() | frozenset(w for w in vocab if _plain(w)) - _names()


def names_a_person(word: str) -> bool:
    """A word that could only be a name: a census first name or common surname, or no word of Webster's
    nor its plural ("lukas", "moreau", not "orders"; WordPiece's vocabulary is no help: it holds "lukas")."""
    word, websters = word.lower(), _websters()
    singular = (word[:-1], word[:-2]) if word.endswith("s") else ()
    return word in _names() or (word not in websters and not any(s in websters for s in singular))


@functools.cache
def _websters() -> frozenset[str]:
    """Webster's lower-case entries (its capitalised ones are names and places) that spell no census name."""
    from english_words import get_english_words_set

    return frozenset(w for w in get_english_words_set(["web2"]) if _plain(w)) - _names()


def _plain(word: str) -> bool:
    return len(word) > 2 and word.isascii() and word.isalpha() and word.islower()


@functools.cache
def _names() -> frozenset[str]:
    """Census first names and common surnames: built once, as `names_a_person` asks for each word."""
    census = _census()
    return census.first | census.common_surnames


class _Census(NamedTuple):
    first: frozenset[str]  # female and male first names, lower-case
    surnames: frozenset[str]
    common_surnames: frozenset[str]  # the 5,000 most common


@functools.cache
def _census() -> _Census:
    """The US census first names and surnames of the `names` package, read once."""
    files = importlib.resources.files("names")

    def read(name: str) -> list[str]:  # each list runs from the most common name
        lines = files.joinpath(name).read_text().splitlines()
        return [line.split()[0].lower() for line in lines if line.strip()]

    surnames = read("dist.all.last")
    first = frozenset(read("dist.female.first") + read("dist.male.first"))
    return _Census(first, frozenset(surnames), frozenset(surnames[:5000]))


class NamesRecognizer(SpacyRecognizer):
    """spaCy's PERSON finds, grown over the rest of the name and cleared of what cannot be a name.

    The small model often tags only part of a name ("Pilar <Ribas Berrocal>") or glues a word onto a number
    ("<iban de89> 3704…"); a name holds no digits, and capitalised neighbours, titles and particles
    ("van", "de") join it.
    """

    _LEFT = regex.compile(
        rf"(?:(?<=^|[\s(\"'])({p.alternation(p.TITLES)})\.?|(?<![\p{{L}}\p{{N}}])(\p{{Lu}}[\p{{L}}'’-]*)"
        rf"|(?<=\p{{Lu}}[\p{{L}}'’-]*\s)({_PARTICLES}))\s+$"
    )
    _RIGHT = regex.compile(
        rf"^\s+(?:({p.alternation(p.DEGREES)})(?!\w)|(\p{{Lu}}[\p{{L}}'’-]*)"
        rf"|({_PARTICLES})(?=\s+\p{{Lu}}))"
    )

    def __init__(self) -> None:
        super().__init__(supported_entities=["PERSON"])

    def load(self) -> None:
        plain_words()

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        out = []
        for result in super().analyze(text, entities, nlp_artifacts):
            # "<Jane Doe jane@x.com>": the model took the address after the name; trim it (and numbers)
            # off the ends, keeping the name only when what is left reads as one (capitalised words).
            glued = list(regex.finditer(r"\S+", text, pos=result.start, endpos=result.end))
            while glued and _not_name_text(glued[-1].group()):
                glued.pop()
            while glued and _not_name_text(glued[0].group()):
                glued.pop(0)
            if not glued or (
                glued[-1].end() - glued[0].start() < result.end - result.start
                and not all(w.group()[0].isupper() for w in glued)
            ):
                continue
            result.start, result.end = glued[0].start(), glued[-1].end()
            found = text[result.start : result.end]
            if _not_name_text(found):
                continue
            if (found.isupper() and len(found) <= 4) or _MIXED_CASE.search(found):
                continue  # "7.63 <GB>", "<SDK>", "<LoRA>", "<SQLite>": units, acronyms and product names
            words = list(regex.finditer(r"\S+", text, pos=result.start, endpos=result.end))
            while words and not _is_name_part(words[0].group()):
                words.pop(0)  # "<Contact Stuart Wood>": the model took the verb before the name
            while words and not _is_name_part(words[-1].group()):
                words.pop()
            if not words:
                continue
            result.start = self._grow(text, words[0].start(), self._LEFT, left=True)
            result.end = self._grow(text, words[-1].end(), self._RIGHT, left=False)
            if self._is_word_not_name(text[result.start : result.end]):
                continue
            out.append(result)
        return out

    def _is_word_not_name(self, found: str) -> bool:
        """One word that is an English word and no census name: a UI label ("select Add Pet", "open Bags")
        the small model reads as a person, as it does most capitalised words it has not seen."""
        bare = found.split("'")[0].split("’")[0].lower()
        return " " not in found.strip() and bare in plain_words()

    @staticmethod
    def _grow(text: str, at: int, pattern: Any, *, left: bool) -> int:
        for _ in range(3):  # a name has few parts; a run of capitals beyond that is a title or a heading
            match = pattern.search(text[max(0, at - 40) : at]) if left else pattern.match(text[at : at + 40])
            if match is None or not _is_name_part(match.group().strip()):
                break
            at = at - len(match.group()) if left else at + match.end()
        return at


class KnownNameRecognizer(EntityRecognizer):
    """A first name and a surname, both in the US census lists (the `names` package), however written ("for
    Olivia Hargreaves", "Hargreaves, Olivia", "olivia.hargreaves"; in lower case only after a word that points
    at someone: "escalate to lowell samuels"), and a first name alone after such a word or before a verb of
    people ("updated by Candace", "Christine said"): places spaCy's small model read none of them. First names
    that are common words (`COMMON_WORD_NAMES`) count for neither."""

    _WORDS = regex.compile(r"(?<![\p{L}\p{N}'’-])\p{L}[\p{L}'’-]*")
    _SPACE = regex.compile(r"[ \t]+")
    _JOINED = regex.compile(r"[._]")  # a user name's "first.last"
    _ALONE_BEFORE = frozenset(p.PEOPLE_VERBS)
    _ALONE_AFTER = frozenset(p.POINTING_WORDS)
    # A chat's "@olivia" or "@jsmith", a forum's "u/olivia_h"; not "@app.route(" or "@types/node".
    _MENTION = regex.compile(r"(?<![\w.@/])(?:@|\bu/)(?P<v>[\p{L}][\w.-]*[\w]|[\p{L}])(?![\w(/@-])")
    # "my handle is olivia_h92", "username: jsmith": a value given as a user name is one, names or not,
    # once it reads as a handle rather than a word ("the handle is loose", "login: broken").
    _NAMED_HANDLE = regex.compile(
        r"(?i:\b(?:handle|user\s*name|screen\s*name|gamertag|nickname|login|user\s*id)(?:\s+is|\s*[:=])\s+)"
        r"@?(?P<v>\p{L}[\w.-]*[\p{L}\p{N}])(?![\w@])"
    )

    def __init__(self) -> None:
        super().__init__(supported_entities=["PERSON"], name="KnownNameRecognizer")

    def load(self) -> None:
        census = _census()
        not_names = STOP_WORDS | frozenset(p.NOT_NAMES)
        self.first = census.first - p.COMMON_WORD_NAMES - not_names
        # "Olivia said": Said is a surname too, but not after a first name.
        verbs = frozenset(p.PEOPLE_VERBS) | frozenset(p.POINTING_WORDS)
        self.surnames = census.surnames - not_names - verbs
        # "jsmith" but not Lombok's "@Getter" (Etter is the 7,033rd surname): an initialled handle takes a
        # surname of the 5,000 most common, two thirds of the population.
        self.common_surnames = self.surnames & census.common_surnames

    def _is_handle(self, handle: str) -> bool:
        """A handle holding a first name ("olivia.h92"), or an initial and a surname ("jsmith")."""
        parts = [part for part in regex.split(r"[._\-\d]+", handle) if part]
        initialled = len(handle) > 4 and handle[1:] in self.common_surnames
        return initialled or any(part in self.first for part in parts)

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        found = list(self._WORDS.finditer(text))
        words, spans = [w.group() for w in found], [w.span() for w in found]
        lower = [w.lower() for w in words]

        def gap(i: int) -> str | None:  # what stands between word i and the next
            return text[spans[i][1] : spans[i + 1][0]] if i + 1 < len(words) else None

        def spaced(i: int) -> bool:
            return (between := gap(i)) is not None and self._SPACE.fullmatch(between) is not None

        def pointed(first: int, last: int) -> bool:  # "to Candace", "Candace said"
            before = first > 0 and lower[first - 1] in self._ALONE_AFTER
            return before or (spaced(last) and lower[last + 1] in self._ALONE_BEFORE)

        def capitalised(*at: int) -> bool:
            return all(words[i][0].isupper() for i in at)

        results = [
            RecognizerResult("PERSON", *m.span("v"), SCORE)
            for m in self._MENTION.finditer(text)
            if self._is_handle(m.group("v").lower())
        ]
        results += [
            RecognizerResult("PERSON", *m.span("v"), SCORE)
            for m in self._NAMED_HANDLE.finditer(text)
            if regex.search(r"\p{L}[\d_.]", m.group("v")) or self._is_handle(m.group("v").lower())
        ]
        for i, word in enumerate(lower):
            if word not in self.first:
                continue
            pair = i + 1 < len(words) and lower[i + 1] in self.surnames
            joined = pair and self._JOINED.fullmatch(gap(i) or "") is not None
            if joined or (pair and spaced(i) and (capitalised(i) or pointed(i, i + 1))):
                results.append(RecognizerResult("PERSON", spans[i][0], spans[i + 1][1], SCORE))
            elif i > 0 and gap(i - 1) == ", " and lower[i - 1] in self.surnames and capitalised(i - 1, i):
                results.append(RecognizerResult("PERSON", spans[i - 1][0], spans[i][1], SCORE))
            elif capitalised(i) and pointed(i, i):
                results.append(RecognizerResult("PERSON", *spans[i], SCORE))
        return results


# Verhoeff's tables: multiplication in the dihedral group D5, and the position permutations.
_D5 = [
    [int(c) for c in row]
    for row in (
        "0123456789",
        "1234067895",
        "2340178956",
        "3401289567",
        "4012395678",
        "5987604321",
        "6598710432",
        "7659821043",
        "8765932104",
        "9876543210",
    )
]
_P5 = [
    [int(c) for c in row]
    for row in (
        "0123456789",
        "1576283094",
        "5803796142",
        "8916043527",
        "9453126870",
        "4286573901",
        "2793806415",
        "7046913258",
    )
]


def _verhoeff(value: str) -> bool:
    """The Verhoeff checksum (dihedral group D5) over the digits of `value`, as Aadhaar numbers carry."""
    check = 0
    for i, digit in enumerate(int(c) for c in reversed(value) if c.isdigit()):
        check = _D5[check][_P5[i % 8][digit]]
    return check == 0


def _digits(least: int, most: int) -> Callable[[str], bool]:
    return lambda value: least <= sum(c.isdigit() for c in value) <= most


def _not_name_text(text: str) -> bool:
    """Whether `text` holds what no name does (a digit, an address's '@', markup or code)."""
    return any(c.isdigit() or c in "@<>/\\_=()[]{}" for c in text)


def _is_name_part(word: str) -> bool:
    bare = word.split("'")[0].split("’")[0].lower()
    return bare not in STOP_WORDS and bare not in p.NOT_NAMES


def _name_words(first_capitalised: bool, least: int = 1) -> str:
    """A title or none, then `least` to 3 words of a name, particles ("van der") between them; no word an
    English stop word or one of `NOT_NAMES`."""
    stop = p.alternation([*STOP_WORDS, *p.NOT_NAMES])
    initial = r"\p{Lu}" if first_capitalised else r"\p{L}"
    word = rf"(?i:(?!(?:{stop})(?![\p{{L}}'’-]))){initial}[\p{{L}}'’-]+"
    title = rf"(?:(?:{p.alternation(p.TITLES)})\.?[ ])?"
    return rf"(?P<v>{title}{word}(?:[ ](?:{_PARTICLES}[ ])?{word}){{{least - 1},2}})"


def _introduced_name() -> str:
    # "my name is" announces a name however it is written; "I'm" and "this is" only a capitalised one
    # ("I'm having trouble" is no introduction).
    # The same in the languages of the other European users of an English-language app: the analyzer's
    # model reads English, so "je m'appelle Jean Dupont" kept the name.
    strong = (
        r"(?i:\bmy\s+name\s+is|\bmy\s+name['’]s|\bje\s+m['’]\s*appelle|\bmon\s+nom\s+(?:est|c['’]est)"
        r"|\bmein\s+name\s+ist|\bich\s+hei(?:ß|ss)e|\bme\s+llamo|\bmi\s+nombre\s+es|\bmi\s+chiamo"
        r"|\bil\s+mio\s+nome\s+è|\bme\s+chamo|\bmeu\s+nome\s+é|\bmijn\s+naam\s+is|\bik\s+heet)\s+"
    )
    weak = r"(?i:\bi\s+am|\bi['’]?m|\bthis\s+is|\bcall\s+me)\s+"
    # A form's "name: jane doe", but not a YAML "name: build" (one word): lower-case takes two.
    form = r"(?i:\bname:)\s+"
    # "Amelie Laurent here, ..." signs a message in: a capitalised name opening it or a sentence, but no
    # gerund ("Cooking here, is it safe?"); a role ("Beginner here,") is redacted too, which costs a word.
    signed_in = rf"(?:^|(?<=[.!?]\s+)){_name_words(True)}(?<!ing)(?=\s+here[,.!;:])"
    return (
        rf"{strong}{_name_words(False)}|{weak}{_name_words(True)}"
        rf"|{form}(?:{_name_words(False, least=2)}|{_name_words(True)})|{signed_in}"
    )


def _greeted_name() -> str:
    # "Thanks Maria", "Regards, Carola Gierschner-Pergande", "cc John Smith".
    greeting = (
        r"(?i:\b(?:thanks|thank\s+you|thx|hi|hello|hey|dear|regards|cheers|sincerely|cc|signed))[,:!]?\s+"
    )
    return rf"{greeting}{_name_words(True)}"


def _addressed_name() -> str:
    # "We met Ranveer Kibe", "send the contract to Cristina Campano": two or three capitalised words after a
    # verb that takes a person, or after a field that holds one ("Contact Support" is one word, so it stays).
    verb = r"(?i:\b(?:met|meet|contact|ask|asked|emailed|called|tell|told|invite|invited|cc"
    verb += r"|(?:forward|assign|give|send|pass|hand)(?:\s+[\w-]+){0,3}?\s+to|talk\s+to"
    verb += r"|(?:speak|spoke)\s+(?:to|with)))"
    # A ticket's or a mail's fields: "Assigned to: Priya Raman", "Owner - Kwame Mensah".
    field = r"(?i:\b(?:assigned\s+to|assignee|owner|reporter|reported\s+by|requester|requested\s+by|approver"
    field += r"|approved\s+by|author|created\s+by|updated\s+by|from|to|attn|attention))\s*[:\-–—]"
    return rf"(?:{verb}|{field})\s+{_name_words(True, least=2)}"


def _acting_name() -> str:
    # "Lidia Midura asked me to open this ticket": two or three capitalised words before a verb of people.
    # Past tenses of talking: "Windows Defender says" and "Google Drive needs" are products.
    verb = rf"(?:{p.alternation(p.PEOPLE_VERBS)})\b"
    return rf"(?<![\p{{L}}\p{{N}}'’.-]){_name_words(True, least=2)}(?=\s+{verb})"


def _obfuscated_email_ok(value: str) -> bool:
    canonical = p.canonical_email(value)
    # "meet at the office" is no address: it takes "@", a dot after it, and a known top-level domain.
    if "@" not in canonical or canonical == value.lower() or not (domain := _OFFLINE_TLDS(canonical)).fqdn:
        return False
    # "file a claim at parcelo.com", "visit us at parcelo.com": a plain word before a spelt "at" is prose,
    # unless the domain is a mailbox provider's ("sunshine at gmail.com").
    spelt = _SPELT_AT.match(value)
    plain = spelt is not None and (len(spelt[1]) <= 2 or spelt[1].lower() in plain_words())
    return not plain or domain.domain in p.MAILBOX_PROVIDERS


_SPELT_AT = regex.compile(r"(?i)(\p{L}+)\s+at\s")
# tldextract fetches the Public Suffix List over the network on first use; its bundled snapshot will do.
_OFFLINE_TLDS = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class OfflineEmailRecognizer(EmailRecognizer):
    def validate_result(self, pattern_text: str) -> bool:
        return _OFFLINE_TLDS(pattern_text).fqdn != ""


class GatedPhoneRecognizer(PhoneRecognizer):
    """Presidio's phonenumbers matcher (8 regions, a third of analysis time) only where it can match."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        # No phone number anywhere has fewer than 7 digits; order ids and versions cost nothing here.
        if sum(c.isdigit() for c in text) < 7:
            return []
        results = super().analyze(text, entities, nlp_artifacts)
        # phonenumbers reads "build 13100596" or "--port 16938" as numbers somewhere; their labels say not.
        return [r for r in results if not _avoided(_words_before(text, r.start, 3), _NOT_PHONE, p.CALL_WORDS)]


class GroupedCardRecognizer(CreditCardRecognizer):
    """Presidio's card numbers plus Mastercard's 2221–2720 range, grouped as cards are printed."""

    # Dots, slashes and underscores group a card as well as dashes and spaces do ("4111.1111.1111.1111").
    SEPARATORS = "- ./_"

    def __init__(self) -> None:
        sep = f"[{regex.escape(self.SEPARATORS)}]?"
        first = r"(4\d{3}|5[0-5]\d{2}|2[2-7]\d{2}|6\d{3}|1\d{3}|3\d{3})"
        pattern = rf"\b(?!1\d{{12}}(?!\d)){first}{sep}(\d{{3,4}}){sep}(\d{{3,4}}){sep}(\d{{3,5}})\b"
        super().__init__(
            patterns=[Pattern("cards", pattern, 0.3)],
            replacement_pairs=[(c, "") for c in self.SEPARATORS],
        )

    def validate_result(self, pattern_text: str) -> bool:
        # Luhn passes one digit string in ten; groups of 4 (or Amex's 4-6-5) tell a card from "345678-12345".
        sizes = [len(g) for g in regex.split(f"[{regex.escape(self.SEPARATORS)}]", pattern_text)]
        grouped = sizes[:-1] == [4] * (len(sizes) - 1) or sizes in ([4, 6, 5], [4, 6, 4])
        return (len(sizes) == 1 or grouped) and self.checksum(pattern_text)

    def checksum(self, value: str) -> bool:
        """Presidio's Luhn check on `value` without its separators, however it is grouped."""
        return bool(super().validate_result(value))


class SsnRecognizer(UsSsnRecognizer):
    """Presidio's SSN patterns, without sparing the published sample numbers: someone may type them."""

    def invalidate_result(self, pattern_text: str) -> bool:
        if "".join(c for c in pattern_text if c.isdigit()) in ("123456789", "987654320", "078051120"):
            return len({c for c in pattern_text if not c.isdigit()}) > 1  # mixed delimiters only
        return super().invalidate_result(pattern_text)


class SpacedIbanRecognizer(EntityRecognizer):
    """IBANs printed in groups inside a sentence, cut back to the longest prefix passing mod-97."""

    CANDIDATE = regex.compile(r"(?<![\p{L}\p{N}])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,32}")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
        results = []
        for match in self.CANDIDATE.finditer(text):
            groups = list(regex.finditer(r"\S+", match.group()))
            # Groups are of four; the first that is not ends the IBAN (a compact one is a group of its own).
            last = next((i for i, g in enumerate(groups) if len(g.group()) != 4), len(groups) - 1)
            groups = groups[: last + 1]
            for k in range(len(groups), 0, -1):
                compact = "".join(g.group() for g in groups[:k]).upper()
                end_ok = match.start() + groups[k - 1].end()
                if end_ok < len(text) and text[end_ok].isalnum():
                    continue  # the cut falls inside a word
                if 15 <= len(compact) <= 34 and _iban_checksum_ok(compact):
                    results.append(RecognizerResult("IBAN_CODE", match.start(), end_ok, 1.0))
                    break
        return results


def _iban_checksum_ok(iban: str) -> bool:
    """ISO 13616 mod-97 check on a compact, upper-case IBAN."""
    if not (iban[:2].isalpha() and iban[2:4].isdigit() and iban.isalnum()):
        return False
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return int(digits) % 97 == 1
