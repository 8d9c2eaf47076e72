"""A tenant's public terms: names its own app writes into the system prompts of many different users.

The name recogniser reads a brand ("You are the support assistant of Finly") as a person. Redacting it
everywhere puts `<PERSON>` into the training pairs, and an adapter then learns to say `<PERSON>` to users.
A name that the app's system prompt gives to at least `min_users` distinct end users, and to at least
half of the users whose system prompts were seen, is the app's vocabulary, not a fact about one of them, so
it is kept from then on. Per-user system prompts ("the customer is Jane Doe") name each person for one user
only and stay redacted; the share keeps a handful of accounts an attacker named after someone (where an app
puts a user's display name in its prompt) from unredacting that person across a tenant of many users.
Counts live in memory, bounded: after a restart a term is relearned from the next `min_users` users. The
words of the tenant's own name are public from the start (`own_words`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict

MAX_CANDIDATES = 2048  # per tenant; the least recently seen candidate is forgotten first
MAX_PUBLIC = 256  # per tenant; more than this many brand names is not what the rule is for
MAX_USERS = 4096  # users counted per tenant toward the share; past it the share needs MAX_USERS / 2


_SENTENCES = re.compile(r"(?<=[.!?:])\s+|\n+")
_WORDS = re.compile(r"([^\W\d_][\w&]*)(?:['’]s)?")  # the word, without a possessive


def capitalised_words(texts: list[str]) -> set[str]:
    """The capitalised words of `texts` that do not begin a sentence, possessives cut ("Lumen" of "You are
    Lumen Corp's assistant"): candidates as well as the recogniser's names. It reads a brand as a person in
    one sentence ("Will Lumen pay for my gym?") and not in another, and the system prompt, where it did
    not, never made it public."""
    found = set()
    for text in texts:
        for sentence in _SENTENCES.split(text):
            for word in _WORDS.findall(sentence)[1:]:
                if word[0].isupper():
                    found.add(word)
    return found


class PublicTerms:
    """Counts, per tenant, the distinct users whose system prompts hold each name; answers the public ones."""

    def __init__(self, min_users: int) -> None:
        self.min_users = min_users
        self._lock = threading.Lock()
        # Candidates are held by digest and their users by keyed id only: nothing here is a raw name
        # until it has shown itself public.
        self._seen: dict[str, OrderedDict[bytes, set[str]]] = {}
        self._users: dict[str, set[str]] = {}
        self._public: dict[str, frozenset[str]] = {}

    def observe(self, tenant_id: str, user: str | None, names: set[str]) -> None:
        """Count `user` (a keyed id; None is anonymous and not counted), who sent a system prompt, for each
        name in it."""
        if not self.min_users or not user:
            return
        with self._lock:
            everyone = self._users.setdefault(tenant_id, set())
            if len(everyone) < MAX_USERS:
                everyone.add(user)
            public = self._public.get(tenant_id, frozenset())
            seen = self._seen.setdefault(tenant_id, OrderedDict())
            for name in names - public:
                key = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=16).digest()
                users = seen.pop(key, set())
                users.add(user)
                shared = len(users) >= self.min_users and 2 * len(users) >= len(everyone)
                if shared and len(public) < MAX_PUBLIC:
                    public = public | {name}
                    continue
                seen[key] = users
                while len(seen) > MAX_CANDIDATES:
                    seen.popitem(last=False)
            self._public[tenant_id] = public

    def public(self, tenant_id: str, name: str = "") -> frozenset[str]:
        """The names this tenant's redaction keeps: those its system prompts showed public, and the words of
        the tenant's own `name` (none when counting is off, `min_users` 0)."""
        if not self.min_users:
            return frozenset()
        return self._public.get(tenant_id, frozenset()) | own_words(name)


def own_words(tenant_name: str) -> frozenset[str]:
    """The words of a tenant's name as its app writes them ("finly" keeps "Finly", "acme-corp" "Acme" and
    "Corp"): operators name a tenant after its app or customer, so a name made of those words is the brand
    from the first request, not after `min_users` users (a new tenant's first answers stored `<PERSON>` for
    its brand)."""
    return frozenset(word.capitalize() for word in re.split(r"[^A-Za-z]+", tenant_name) if len(word) > 2)
