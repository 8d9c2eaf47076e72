"""What the capture API accepts: interactions and feedback events, validated per kind."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    model_validator,
)

from tuneloop.capture.metadata_keys import is_long_number
from tuneloop.retrieve.extract import visible

FEEDBACK_KINDS = (
    "thumbs",
    "rating",
    "preference",
    "edit",
    "comment",
    "accepted",
    "copied",
    "regenerated",
    "followup",
    "escalated",
    "abandoned",
    "dwell_ms",
    "outcome",
    "score",
    "source_clicked",
    "source_helpful",
    "source_wrong",
)
# Feedback on a retrieved source the answer showed: the value names its chunk (retrieve/ learns from them).
SOURCE_KINDS = ("source_clicked", "source_helpful", "source_wrong")
# Kinds that only say "this happened": the value is `true` or omitted.
FLAG_KINDS = ("accepted", "copied", "escalated", "abandoned")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)  # client clocks run ahead
# Reading time beyond a week is a broken client clock, and huge values would overflow session KPIs.
MAX_DWELL_MS = 7 * 24 * 3600 * 1000

# Not dots alone: "." and ".." name no path segment a URL can carry, so such an id could never be read back.
ID_PATTERN = r"^[A-Za-z0-9._:\-]*[A-Za-z0-9_:\-][A-Za-z0-9._:\-]*$"
ID_MAX = 128
Id = Annotated[str, Field(min_length=1, max_length=ID_MAX, pattern=ID_PATTERN)]


def is_id(text: str) -> bool:
    """Whether `text` is an id `Id` accepts (an id that is not one names nothing stored)."""
    return len(text) <= ID_MAX and re.fullmatch(ID_PATTERN, text) is not None


def not_found(what: str, text: str) -> str:
    """The 404 message for the `what` a client named `text`: repeated when it is an id, not when it is
    none (text refused for its characters may be an email address someone typed in, and errors reach logs)."""
    return (
        f"{what} {text!r} not found"
        if is_id(text)
        else f"{what} not found (the name sent is no id: not repeated)"
    )


ShortText = Annotated[str, Field(max_length=256)]


class Message(BaseModel):
    """One chat message, as OpenAI shapes it."""

    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class InteractionIn(BaseModel):
    """An interaction an application made with its own model, logged through `POST /v1/interactions`."""

    model_config = ConfigDict(extra="forbid")
    id: Id | None = None
    user: ShortText | None = None
    session: ShortText | None = None
    messages: list[Message] = Field(min_length=1, max_length=512)
    response: str
    choices: list[str] | None = Field(
        default=None, max_length=16, description="All alternatives shown; choices[0] is the response."
    )
    model: ShortText | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _choices_start_with_response(self) -> InteractionIn:
        if self.choices is not None and (not self.choices or self.choices[0] != self.response):
            raise ValueError("choices[0] must equal response (choices lists every alternative shown)")
        return self


class IndexPreference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chosen: StrictInt = Field(ge=0, le=15)
    rejected: StrictInt = Field(ge=0, le=15)


class InteractionPreference(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chosen_interaction: Id
    rejected_interaction: Id


MEASURE_DIGITS = 3
MAX_MEASURE_DIGITS = 18


def _a_measure(value: Any) -> Any:
    """`value` as stored: a whole number of 7 or more digits kept to its first 3 significant digits.

    Rewards, KPIs and /metrics read this as a number, so redaction cannot put a placeholder here as it does
    in metadata; a number that long may be an identifier (a phone, card or account number), and 3 digits of
    one identify no one while a duration in milliseconds or an amount in cents keeps its magnitude. Past 18
    digits no measure needs the number, an int past float range would overflow every read, and a float's
    mantissa still carries a card number scaled up (4.111111111111111e20): refused, int or float (the
    message does not repeat the number, as errors reach logs)."""
    if _past_measure_digits(value):
        raise ValueError(
            f"value.value: a number of more than {MAX_MEASURE_DIGITS} digits is no measure; send "
            "counts and times in units that keep them smaller"
        )
    if not is_long_number(value):
        return value
    whole = abs(int(value))
    digits = len(str(whole))
    step = 10 ** (digits - MEASURE_DIGITS)
    kept = (whole + step // 2) // step * step * (1 if value > 0 else -1)
    return float(kept) if isinstance(value, float) else kept


def _past_measure_digits(value: Any) -> bool:
    """Whether number `value` has more than MAX_MEASURE_DIGITS whole digits (a bool is no number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return abs(value) >= 10**MAX_MEASURE_DIGITS  # exact for floats too: Python compares them to ints exactly


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=64)]
    value: StrictBool | StrictInt | StrictFloat

    @model_validator(mode="after")
    def _value_is_a_measure(self) -> Outcome:
        self.value = _a_measure(self.value)
        return self


class SourceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chunk_id: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:\-]+$")]


class Score(BaseModel):
    """A named score as Langfuse and LangSmith send them; the reward policy's `scores` says how it counts."""

    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=64)]
    data_type: Literal["numeric", "categorical", "boolean"]
    value: StrictBool | StrictInt | StrictFloat | Annotated[str, Field(min_length=1, max_length=64)]
    comment: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _value_fits_type(self) -> Score:
        value = self.value
        if self.data_type == "numeric" and isinstance(value, bool | str):
            raise ValueError("value.value: a numeric score takes a number")
        value = self.value = _a_measure(value)
        if self.data_type == "boolean":
            if isinstance(value, str) or (not isinstance(value, bool) and value not in (0, 1)):
                raise ValueError("value.value: a boolean score takes true/false (or 1/0)")
            self.value = bool(value)
        if self.data_type == "categorical" and not isinstance(value, str):
            raise ValueError("value.value: a categorical score takes its category as a string")
        return self


class Regenerated(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replaced_by: Id


class FeedbackIn(BaseModel):
    """One feedback event; `id` is the client's event id and makes ingestion idempotent. It names the
    interaction it is about, or a `session` (it then lands on the session's latest interaction)."""

    model_config = ConfigDict(extra="forbid")
    id: Id
    interaction_id: Id | None = None
    session: ShortText | None = None
    kind: Literal[FEEDBACK_KINDS]  # type: ignore[valid-type]
    value: Any = None
    rater: ShortText | None = None
    source: Literal["user", "labeler", "judge", "system"] = "user"
    created_at: datetime | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _value_fits_kind(self) -> FeedbackIn:
        if (self.interaction_id is None) == (self.session is None):
            raise ValueError("interaction_id: name the interaction, or else the session, the event is about")
        self.value = validate_value(self.kind, self.value)
        if problem := self_reference(self.kind, self.value, self.interaction_id):
            raise ValueError(problem)
        if self.created_at is not None and self.created_at.tzinfo is None:
            self.created_at = self.created_at.replace(tzinfo=UTC)
        if self.created_at is not None and not EPOCH <= self.created_at <= datetime.now(UTC) + FUTURE_SLACK:
            # Times out of range overflow in UTC conversion; future ones would fill KPI windows yet to come.
            raise ValueError("created_at: must lie between 1970-01-01 and now (UTC); omit it to use arrival")
        if self.created_at is not None:
            # Stored in UTC: SQLite keeps no offset, so "10:00+05:00" would otherwise read back as 10:00Z.
            self.created_at = self.created_at.astimezone(UTC)
        return self


def validate_value(kind: str, value: Any) -> Any:
    """The event value normalised for its kind; ValueError names what a valid value looks like."""
    if kind == "thumbs":
        if type(value) is not int or value not in (1, -1):
            raise ValueError("value: thumbs takes 1 (up) or -1 (down)")
    elif kind == "rating":
        if type(value) is not int or not 1 <= value <= 5:
            raise ValueError("value: rating takes an integer from 1 to 5")
    elif kind == "preference":
        if not isinstance(value, dict):
            raise ValueError(
                'value: preference takes {"chosen": i, "rejected": j} (indices into the interaction\'s '
                'choices) or {"chosen_interaction": id, "rejected_interaction": id}'
            )
        model = InteractionPreference if "chosen_interaction" in value else IndexPreference
        parsed = model.model_validate(value)
        if isinstance(parsed, IndexPreference) and parsed.chosen == parsed.rejected:
            raise ValueError("value: preference chosen and rejected must differ")
        return parsed.model_dump()
    elif kind in ("edit", "comment"):
        # An edit becomes the chosen answer of a training pair: one of zero-width characters alone would
        # teach the model to answer nothing (`str.strip` keeps them; documents and /v1/retrieve refuse them).
        if not isinstance(value, str) or not visible(value):
            raise ValueError(
                f"value: {kind} takes a non-empty string of visible text (not only whitespace or invisible "
                "characters such as zero-width spaces)"
            )
    elif kind in FLAG_KINDS:
        if value is not None and value is not True:
            raise ValueError(f"value: {kind} takes true or no value")
        return True
    elif kind == "regenerated":
        return None if value is None else Regenerated.model_validate(value).model_dump()
    elif kind == "followup":
        if value is not None and not isinstance(value, str):
            raise ValueError("value: followup takes the follow-up message as a string, or no value")
    elif kind == "dwell_ms":
        if type(value) not in (int, float) or not 0 <= value <= MAX_DWELL_MS:
            raise ValueError(f"value: dwell_ms takes milliseconds from 0 to {MAX_DWELL_MS} (a week)")
        return _a_measure(value)  # nine digits hold a national id; a duration past 17 minutes needs three
    elif kind == "outcome":
        return Outcome.model_validate(value).model_dump()
    elif kind == "score":
        if not isinstance(value, dict):
            raise ValueError('value: score takes {"name", "data_type", "value", "comment"?}')
        try:
            return Score.model_validate(value).model_dump(exclude_none=True)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            msg = (
                "unknown field"
                if err["type"] == "extra_forbidden"
                else err["msg"].removeprefix("Value error, ")
            )
            raise ValueError(f"value.{where}: {msg}" if where else msg) from None
    elif kind in SOURCE_KINDS:
        if not isinstance(value, dict):
            raise ValueError(f'value: {kind} takes {{"chunk_id": id}} (a source the answer showed)')
        return SourceRef.model_validate(value).model_dump()
    return value


def self_reference(kind: str, value: Any, interaction_id: str | None) -> str | None:
    """Why an event compares or replaces an interaction with itself, or None. Ids are compared as given:
    as sent on validation, and again as stored where an event lands (`int-1` and its `ref-` form are one)."""
    chosen = value.get("chosen_interaction") if kind == "preference" else None
    if chosen is not None and chosen == value["rejected_interaction"]:
        return "value: preference chosen_interaction and rejected_interaction must differ"
    if kind == "regenerated" and value and value["replaced_by"] == interaction_id:
        # A regeneration replaced by itself would count the same answer as both rejected and kept.
        return "value.replaced_by: names the regenerated interaction itself; send the new one"
    return None


def storable(text: str) -> str:
    """`text` with what no store can hold (NUL, lone surrogates) replaced by U+FFFD: for text tuneloop did
    not receive but made (a model's answer), which cannot be refused back to its sender."""
    if text_problem(text) is None:
        return text
    return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)


def text_problem(text: str) -> str | None:
    """What makes `text` unstorable (a NUL PostgreSQL refuses, a lone surrogate no encoder takes), or None."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000); remove it"
    if text.isascii():  # the common case, and ASCII holds no surrogates
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate; send valid Unicode (escape pairs together)"
    return None
