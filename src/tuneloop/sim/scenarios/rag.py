"""`rag`: Finly's help centre answered from documents. Each fact has a current page and two outdated ones
(last year's price list, an older archived page) that read just as relevant; users prefer short answers
that state the current fact and cite it, open sources with a position bias, and mark outdated ones wrong.

Hidden score = 0.6·(states the current fact) + 0.2·(cites a source as [n]) + 0.2·brevity, minus 0.4 for
stating an outdated fact. Hidden relevance of a document to a question (`relevance`): the topic's current
page 3, its related page 1, its outdated pages 0 (wrong sources), anything else 0.
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

from tuneloop.sim.scenario import Behaviour, Prompt, Scenario, Topic, ramp, words

SYSTEM_PROMPT = "You are Finly's help assistant. Answer from the help centre's sources and cite them."
# Probability that a user who looked at a source opens it, by its hidden relevance (position aside).
OPEN_BY_RELEVANCE = {3: 0.75, 1: 0.3, 0: 0.3}
HELPFUL_AFTER_OPEN = 0.4  # P(marked helpful | opened a current page)
WRONG_AFTER_OPEN = 0.6  # P(marked wrong | opened an outdated page)
OUTDATED = ("stale", "archived")  # the kinds of page that state an outdated fact


class Fact(NamedTuple):
    """One help-centre fact: how users ask about it, its current and outdated figures, and its pages."""

    phrasings: tuple[str, ...]
    current: str
    outdated: tuple[str, str]  # the figures the stale and the archived page state
    current_page: str
    outdated_pages: tuple[str, str]  # stale, archived
    related_page: str


FACTS: dict[str, Fact] = {
    "transfer_fee": Fact(
        ("What does an international transfer cost?", "Is there a fee to send money abroad?",
         "How much is the fee on a transfer to another country?"),
        "0.7%", ("0.5%", "0.9%"),
        "Transfers abroad cost 0.7% of the amount (at least $1). The app shows the fee before you confirm.",
        ("Price list 2024. Transfers abroad cost 0.5% of the amount (at least $1), shown before you confirm.",
         "Fees (2021). Transfers abroad cost 0.9% of the amount (at least $2); the app shows the fee first."),
        "International transfers arrive in 1-2 business days and can be tracked under Payments.",
    ),
    "refund_time": Fact(
        ("How long does a refund take?", "When will I see my refund?", "Where is my refund from a shop?"),
        "3 business days", ("10 business days", "7 business days"),
        "Refunds reach your Finly balance within 3 business days after the merchant sends them.",
        ("Refund policy (archived). Refunds reach your Finly balance within 10 business days of the "
         "merchant.",
         "Refunds (old help page). Refunds reach your Finly balance within 7 business days after the "
         "merchant sends them."),
        "If a merchant refuses a refund you can open a dispute from the payment's page.",
    ),
    "atm_limit": Fact(
        ("What is my daily ATM limit?", "How much cash can I withdraw per day?",
         "Is there a cash withdrawal limit?"),
        "$1,000", ("$500", "$300"),
        "You can withdraw up to $1,000 in cash per day; change the limit under Cards > Limits.",
        ("Limits (2023). You can withdraw up to $500 in cash per day from any ATM.",
         "Card limits (2021). You can withdraw up to $300 in cash per day; change the limit under Cards."),
        "ATM operators may charge their own fee, which the machine shows before you withdraw.",
    ),
    "card_replacement": Fact(
        ("Does a replacement card cost anything?", "How much is a new card if I lose mine?",
         "Is replacing a lost card free?"),
        "free", ("$5", "$10"),
        "Replacement cards are free; order one under Cards after freezing the lost card.",
        ("Card fees (old). A replacement card costs $5 and is ordered under Cards.",
         "Card fees (2021). A replacement card costs $10; order one under Cards after freezing the lost "
         "card."),
        "A replacement card arrives by post within 5 working days of ordering.",
    ),
    "savings_rate": Fact(
        ("What interest does the savings vault pay?", "What is the savings rate?",
         "How much interest do I earn?"),
        "3.1%", ("2.4%", "1.5%"),
        "The savings vault pays 3.1% a year, paid out monthly.",
        ("Savings (last year). The savings vault pays 2.4% a year, paid out monthly.",
         "Savings (2022). The savings vault pays 1.5% a year, paid out monthly."),
        "Money in the savings vault can be moved back to your balance at any time.",
    ),
    "support_hours": Fact(
        ("When can I reach support?", "What are your support hours?", "Is customer support open at night?"),
        "24/7", ("9am to 5pm", "8am to 8pm"),
        "Support answers in the app chat 24/7, every day of the year.",
        ("Contact (2022). Support answers in the app chat from 9am to 5pm on weekdays.",
         "Support (2021). Support answers in the app chat from 8am to 8pm, every day."),
        "For a lost card, freeze it in the app first; support can then order a replacement.",
    ),
    "verification_time": Fact(
        ("How long does identity verification take?", "When is my ID check done?",
         "How fast do you verify documents?"),
        "2 hours", ("24 hours", "48 hours"),
        "Identity checks finish within 2 hours of uploading a clear photo of your document.",
        ("Verification (archived). Identity checks finish within 24 hours of uploading your document.",
         "Verification (2022). Identity checks finish within 48 hours of uploading a photo of your "
         "document."),
        "Accepted documents are passports, driver's licenses and national ID cards.",
    ),
    "chargeback_window": Fact(
        ("How long do I have to dispute a charge?", "Is there a deadline to report a wrong payment?",
         "Until when can I dispute a card payment?"),
        "120 days", ("60 days", "90 days"),
        "You can dispute a card payment up to 120 days after it was made, from the payment's page.",
        ("Disputes (2023). You can dispute a card payment up to 60 days after it was made.",
         "Disputes (2021). You can dispute a card payment up to 90 days after it was made, from the "
         "payment's page."),
        "During a dispute the amount is held and returned to you if the merchant does not respond.",
    ),
}  # fmt: skip
DOCUMENTS: dict[str, str] = {
    f"{topic}-{kind}.md": text
    for topic, fact in FACTS.items()
    for kind, text in (
        ("current", fact.current_page),
        *zip(OUTDATED, fact.outdated_pages, strict=True),
        ("related", fact.related_page),
    )
}
_CITES = re.compile(r"\[\d{1,2}\]")


def _kind(document_id: str) -> str:
    return document_id.removesuffix(".md").rsplit("-", 1)[-1]


def relevance(topic: str, document_id: str) -> int:
    """Hidden relevance of a document to a question of `topic` (0-3)."""
    if not document_id.startswith(f"{topic}-"):
        return 0
    return {"current": 3, "related": 1}.get(_kind(document_id), 0)


def source_events(rng: random.Random, topic: str, shown: list[str]) -> list[tuple[str, str]]:
    """What a user does with the sources shown (document ids in order): (kind, document id) events.

    A source at rank r is looked at with probability 1/r; one looked at is opened by its hidden relevance;
    an opened current page may be marked helpful, an opened outdated page marked wrong.
    """
    events = []
    for rank, doc in enumerate(shown, 1):
        rel = relevance(topic, doc)
        if rng.random() >= 1.0 / rank or rng.random() >= OPEN_BY_RELEVANCE[rel]:
            continue
        events.append(("source_clicked", doc))
        if rel == 3 and rng.random() < HELPFUL_AFTER_OPEN:
            events.append(("source_helpful", doc))
        if _kind(doc) in OUTDATED and rng.random() < WRONG_AFTER_OPEN:
            events.append(("source_wrong", doc))
    return events


def preference(prompt: Prompt, answer: str) -> float:
    """Users' hidden satisfaction: the current fact, cited, briefly; an outdated fact costs."""
    fact = FACTS[prompt.topic]
    text = answer.lower()
    states = fact.current.lower() in text
    wrong = any(figure.lower() in text for figure in fact.outdated)
    return 0.6 * states + 0.2 * bool(_CITES.search(answer)) + 0.2 * ramp(words(answer), 30, 60) - 0.4 * wrong


def rag(seed: int = 0, behaviour: Behaviour | None = None) -> Scenario:
    """The Finly help-centre scenario with current and outdated documents."""
    topics = tuple(Topic(topic, fact.phrasings, f"{fact.current_page} [1]") for topic, fact in FACTS.items())
    return Scenario(
        name="rag",
        system_prompt=SYSTEM_PROMPT,
        topics=topics,
        preference=preference,
        followups=("Is that still true this year?", "Where does it say that?"),
        behaviour=behaviour or Behaviour(),
        documents=DOCUMENTS,
        sources=source_events,
        max_tokens=48,
        seed=seed,
        eval_share=1 / 3,  # 24 questions: a third held out leaves one or two per fact to measure on
    )
