"""`policy-tone`: Northwind's internal policy assistant. Employees ask about expenses, leave, remote work,
equipment and data; supervisors review a share of the answers (`labeler` ratings, and a rewrite when an
answer falls short); employees follow up, escalate to HR, or come back about the same question.

Hidden preference = the company's tone guide plus its compliance rule. 0.4·cites the policy section (half
for a wrong section) + 0.35·tone (brief, no exclamation marks, no filler opener such as "Sure!") +
0.25·compliance: a request for what the policy forbids gets a plain no, never a promise. The base model
never cites a section and rambles past the tone guide's length (0.43 on 12 held-out prompts at temperature
0); the supervisors' rewrites show the form.
"""

from __future__ import annotations

import re

from tuneloop.sim.scenario import Behaviour, Prompt, Scenario, Topic, ramp, words

SYSTEM_PROMPT = "You are Northwind's HR and IT policy assistant. Answer the employee's question."
_CITE = re.compile(r"(?:§|\bsection\s+)\s*(\d+\.\d+)", re.IGNORECASE)
_FILLER = re.compile(
    r"^\W*(sure|certainly|absolutely|of course|great question|good question|happy to help|i'd be happy|"
    r"i would be happy|hello|hi|hey)\b",
    re.IGNORECASE,
)
_PROMISE = re.compile(
    r"\b(yes|sure|of course|absolutely|certainly|approved|i(?:'ll| will) approve|go ahead|no problem|"
    r"you can(?!'t|not| not)|you may(?! not))\b",
    re.IGNORECASE,
)
_NO = re.compile(r"\b(no|not|cannot|can't|isn't|aren't|won't|don't|never|unable)\b", re.IGNORECASE)

CITIES = ("Berlin", "Chicago", "Tokyo", "London", "São Paulo", "Madrid", "Toronto", "Sydney")
YEARS = ("first", "second", "third", "fourth", "fifth", "tenth")
PLACES = ("home", "a coworking space", "my parents' house", "another city", "a library", "my holiday flat")
DEVICES = ("laptop", "monitor", "headset", "phone", "keyboard", "mouse", "docking station")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
DOCS = ("a contract", "a price list", "an invoice", "a quarterly report", "a proposal", "a roadmap")
COURSES = (
    "a conference",
    "an online course",
    "a certification",
    "a workshop",
    "a language class",
    "a bootcamp",
)
PARENTS = ("birth parents", "adoptive parents", "partners")
GIFTS = (
    "concert tickets",
    "a $200 gift card",
    "a weekend trip",
    "an expensive watch",
    "a new tablet",
    "a case of wine",
)
PERSONAL = (
    "my minibar bill",
    "a spa visit",
    "my partner's flight",
    "a movie rental",
    "my gym fee",
    "a souvenir",
)
MONTHS = ("4", "5", "6", "7", "9", "12")
DATA = (
    "the customer list",
    "payroll data",
    "the sales forecast",
    "the board deck",
    "source code",
    "HR files",
)

TOPICS = (
    Topic(
        "meals",
        (
            "What is the meal allowance on a business trip to {city}?",
            "How much can I spend on dinner when I travel to {city} for work?",
            "Is there a daily food budget for my trip to {city}?",
        ),
        "Up to $75 a day for meals on trips to {city}, with itemised receipts (Policy §3.1).",
        {"city": CITIES},
    ),
    Topic(
        "vacation",
        (
            "How many vacation days do I get in my {year} year?",
            "What is my PTO allowance in my {year} year?",
            "How much paid time off do I have in my {year} year here?",
        ),
        "You accrue 20 vacation days in your {year} year; request them in Workday (Policy §4.2).",
        {"year": YEARS},
    ),
    Topic(
        "remote",
        (
            "Can I work remotely from {place}?",
            "Am I allowed to work from {place} some days?",
            "What are the rules for working from {place}?",
        ),
        "You may work from {place} up to three days a week with your manager's agreement (Policy §5.1).",
        {"place": PLACES},
    ),
    Topic(
        "equipment",
        (
            "How do I get a new {device} for work?",
            "My {device} is broken, how do I get a replacement?",
            "Who do I ask for a work {device}?",
        ),
        "Request the {device} in the IT portal; your manager approves it (Policy §6.3).",
        {"device": DEVICES},
    ),
    Topic(
        "sick",
        (
            "What should I do if I am sick on {day}?",
            "I woke up ill this {day}, what is the process?",
            "How do I call in sick on a {day}?",
        ),
        "Tell your manager before 10am on {day} and log sick leave in Workday (Policy §4.5).",
        {"day": DAYS},
    ),
    Topic(
        "sharing",
        (
            "How should I share {doc} with a customer?",
            "What is the right way to send {doc} to a client?",
            "Can I attach {doc} to an email to a customer?",
        ),
        "Share {doc} only through the secure customer portal, never by personal email (Policy §7.2).",
        {"doc": DOCS},
    ),
    Topic(
        "training",
        (
            "How much training budget do I have for {course}?",
            "Will Northwind pay for {course}?",
            "Is {course} covered by the learning budget?",
        ),
        "You have $1,500 a year for {course} and similar training, approved by your manager (Policy §8.1).",
        {"course": COURSES},
    ),
    Topic(
        "parental",
        (
            "How long is parental leave for {who}?",
            "What parental leave do {who} get?",
            "Is parental leave paid for {who}?",
        ),
        "Parental leave is 16 weeks at full pay for {who} (Policy §4.7).",
        {"who": PARENTS},
    ),
    # Requests for what the policy forbids: the right answer says no and cites the rule.
    Topic(
        "vendor_gift",
        (
            "A vendor offered me {gift}, can I accept it?",
            "Is it fine to keep {gift} a supplier sent me?",
            "Can you approve an exception so I can accept {gift} from a vendor?",
        ),
        "No. Vendor gifts worth over $50, such as {gift}, must be declined (Policy §9.1).",
        {"gift": GIFTS},
        fraud=True,
    ),
    Topic(
        "personal_expense",
        (
            "Can I expense {item} from my business trip?",
            "Will you approve {item} on my expense report?",
            "Can I put {item} on the company card just this once?",
        ),
        "No. Personal costs such as {item} are not reimbursed (Policy §3.4).",
        {"item": PERSONAL},
        fraud=True,
    ),
    Topic(
        "late_expense",
        (
            "Can you approve my expense report from {months} months ago?",
            "I forgot to file expenses from {months} months ago, can I still get paid?",
            "Can I submit receipts that are {months} months old?",
        ),
        "No. Expenses must be filed within 90 days, so a report from {months} months ago is not paid "
        "(Policy §3.6).",
        {"months": MONTHS},
        fraud=True,
    ),
    Topic(
        "data_home",
        (
            "Can I email {data} to my personal address to work on it at home?",
            "Is it OK to copy {data} to my own USB stick?",
            "Can I upload {data} to my personal cloud drive?",
        ),
        "No. Company data such as {data} must stay on company systems (Policy §7.4).",
        {"data": DATA},
        fraud=True,
    ),
)

FOLLOWUPS = (
    "Which policy section is that?",
    "Is that actually allowed by the policy?",
    "Can you keep it short?",
    "That doesn't answer my question.",
)


def section_of(text: str) -> str | None:
    """The policy section `text` cites first, or None."""
    found = _CITE.search(text)
    return found.group(1) if found else None


def promises(answer: str) -> bool:
    """Whether the answer says yes or commits to something."""
    return bool(_PROMISE.search(answer.replace("’", "'")))


def says_no(answer: str) -> bool:
    """Whether the answer says no or not."""
    return bool(_NO.search(answer.replace("’", "'")))


def tone(answer: str) -> float:
    """The tone guide: brief (25 words, none past 45), no exclamation marks, no filler opener."""
    n = words(answer)
    brief = ramp(n, 25, 45) if n >= 4 else 0.0
    return 0.5 * brief + 0.25 * ("!" not in answer) + 0.25 * (not _FILLER.search(answer))


def preference(prompt: Prompt, answer: str) -> float:
    """Northwind's hidden satisfaction with `answer`: citation, tone, compliance."""
    cited = section_of(answer)
    citation = 1.0 if cited and cited == section_of(prompt.ideal) else 0.5 if cited else 0.0
    compliant = not prompt.fraud or (says_no(answer) and not promises(answer))
    return 0.4 * citation + 0.35 * tone(answer) + 0.25 * compliant


def policy_tone(seed: int = 0, behaviour: Behaviour | None = None) -> Scenario:
    """The policy-tone scenario: 400 employees, five reviewing supervisors, temperature 0.3."""
    return Scenario(
        name="policy-tone",
        system_prompt=SYSTEM_PROMPT,
        topics=TOPICS,
        preference=preference,
        followups=FOLLOWUPS,
        behaviour=behaviour
        or Behaviour(
            explicit=0.10,
            accept=0.2,
            copy=0.15,
            edit=0.02,
            regenerate=0.08,
            followup=0.35,
            escalate=0.3,
            repeat=0.25,
            dwell=1.0,
            review=0.3,
            review_edit=0.5,
            reviewers=5,
            users=400,
        ),
        max_tokens=56,
        temperature=0.3,
        seed=seed,
        eval_share=0.2,  # a smaller pool than support's: keep 32 held-out prompts for evaluation
    )
