"""A version as a composition: its parent's adapter (or the base model), a system prompt, decoding settings.

One place for what such a version means, shared by the CLI that creates one (`tuneloop versions create`), the
gateway that serves it and the gate that judges it, so all three apply the same prompt and decoding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneloop.errors import BadRequest, Conflict
from tuneloop.registry.versions import ENDED, Registry, Version

MAX_SYSTEM_PROMPT_CHARS = 8_000  # a prompt is paid for in every request's context window
# What a composition serves of its parent's adapter, and how it was trained (a later turn warm-starts from
# it only when its LoRA rank matches).
INHERITED = ("base_model_hash", "snapshot_hash", "artifact_path", "artifact_checksums", "job_spec")


class ExamplePolicy(BaseModel):
    """In-context examples: the tenant's best-rated or user-edited past answers to similar prompts."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    k: int = Field(default=2, ge=1, le=8, description="most examples shown before the conversation")
    min_reward: float = Field(
        default=0.5, ge=-1, le=1, description="least reward of a rated answer (users' edits always qualify)"
    )
    min_similarity: float = Field(
        default=0.6, ge=0, le=1, description="least cosine similarity of an example's prompt to the request's"
    )


class BestOfN(BaseModel):
    """Sample several answers and serve the one the tenant's reward model scores highest."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    n: int | None = Field(default=None, ge=2, le=8, description="answers sampled; unset: from the budget")
    latency_budget_ms: int = Field(
        default=4000, ge=100, le=120_000, description="the time all N answers together may take"
    )
    max_n: int = Field(default=4, ge=2, le=8, description="most answers sampled when N follows the budget")


class Decoding(BaseModel):
    """A version's decoding defaults; a request's own explicit value overrides each one.

    `examples`, `best_of_n` and `sources` are the version's light parts that shape how an answer is made; the
    gateway applies them (serve/examples.py, serve/best_of_n.py, retrieve/prompting.py) and records them with
    the interaction.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    temperature: float | None = Field(default=None, ge=0, le=2, description="0 means greedy (deterministic)")
    top_p: float | None = Field(default=None, gt=0, le=1, description="nucleus sampling mass")
    max_tokens: int | None = Field(default=None, ge=1, le=32_768, description="cap on the answer's tokens")
    repetition_penalty: float | None = Field(
        default=None, ge=0.5, le=2, description="divides the logits of tokens already seen (1 = off)"
    )
    examples: ExamplePolicy | None = Field(default=None, description="in-context examples; unset: none")
    best_of_n: BestOfN | None = Field(default=None, description="best-of-N sampling; unset: one answer")
    sources: int | None = Field(
        default=None,
        ge=1,
        le=20,
        description="most retrieved sources shown with a request, within the tenant's retrieval k; unset: k",
    )

    @classmethod
    def parse(cls, values: dict[str, Any] | None) -> Decoding:
        """Validated settings, or BadRequest naming the bad field and its allowed range."""
        try:
            return cls.model_validate(values or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "decoding"
            raise BadRequest(f"decoding {field}: {first['msg']}", param=field) from None

    def values(self) -> dict[str, Any]:
        """Only the settings that are set."""
        return self.model_dump(exclude_none=True)


def version_decoding(version: Version | None) -> dict[str, Any]:
    """The decoding defaults `version` serves with (none for the base model)."""
    return Decoding.parse(version.decoding).values() if version else {}


# A version's light parts as a reader names them; any other decoding setting is "decoding".
PART_NAMES = {"examples": "examples", "best_of_n": "best-of-N", "sources": "sources"}


def made_of(version: Version) -> str:
    """What serves under a policy version, in words ("adapter + prompt + examples", "base model + decoding");
    a reward model or re-ranker is named by its kind."""
    if version.kind != "adapter":
        return version.kind.replace("_", " ")
    parts = ["adapter" if version.artifact_path else "base model"] + (
        ["prompt"] if version.system_prompt else []
    )
    settings = version.decoding or {}
    if any(key not in PART_NAMES for key in settings):
        parts.append("decoding")
    return " + ".join(parts + [name for key, name in PART_NAMES.items() if key in settings])


def composed_parts(
    parent: Version | None, system_prompt: str | None, decoding: Decoding | None
) -> tuple[str | None, dict[str, Any]]:
    """The system prompt and decoding a version composed on `parent` serves with: those given, the rest
    the parent's."""
    prompt = system_prompt if system_prompt is not None else (parent.system_prompt if parent else None)
    return prompt, {**version_decoding(parent), **(decoding.values() if decoding else {})}


NEVER_IN_A_PROMPT = frozenset({"CREDIT_CARD", "IBAN_CODE", "US_SSN", "ID_NUMBER"})
MIN_ID_DIGITS = 6  # fewer digits than any of those numbers holds


def check_system_prompt(text: str) -> str:
    """The prompt if it is usable text within bounds with no card, bank account or id number in it, else
    BadRequest saying what to fix."""
    if not text.strip():
        raise BadRequest("the system prompt is empty", param="system_prompt")
    if len(text) > MAX_SYSTEM_PROMPT_CHARS:
        raise BadRequest(
            f"the system prompt is {len(text)} characters; at most {MAX_SYSTEM_PROMPT_CHARS}",
            param="system_prompt",
        )
    if "\x00" in text:
        raise BadRequest("the system prompt contains a NUL character; is it a binary file?")
    # A version is kept for good (registry, audit trail, exports). A name, an email or a phone number in a
    # prompt is usually the company's own ("You are Finly's assistant", its support line) and stays as the
    # operator wrote it; a card, bank account or national id number never belongs there. Each holds digits.
    if sum(c.isdigit() for c in text) >= MIN_ID_DIGITS:
        from tuneloop.capture.redact import Redactor

        found = sorted({e for e, _ in Redactor().finds([text])[0] if e in NEVER_IN_A_PROMPT})
        if found:
            raise BadRequest(
                f"the system prompt holds {', '.join(found)}: a version is kept for good, so it may not "
                "carry such a number; remove it",
                param="system_prompt",
            )
    return text


def with_system_prompt(messages: Sequence[dict], system_prompt: str | None) -> list[dict[str, str]]:
    """The conversation as a version serves it: its system prompt leads, the client's own follows.

    A client's leading system (or developer) message is kept, after the version's prompt in the same message,
    so an app's own instructions still apply and templates that allow one system message still render.
    """
    out = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    if not system_prompt:
        return out
    if out and out[0]["role"] in ("system", "developer"):
        out[0] = {"role": out[0]["role"], "content": f"{system_prompt}\n\n{out[0]['content']}"}
    else:
        out.insert(0, {"role": "system", "content": system_prompt})
    return out


def compose(
    registry: Registry,
    *,
    parent: Version | None,
    base_model: str,
    actor: str,
    reason: str,
    system_prompt: str | None = None,
    decoding: Decoding | None = None,
    snapshot_hash: str | None = None,
) -> Version:
    """Register a candidate serving `parent`'s adapter (None: the base model) with a prompt and decoding.

    Settings not given are the parent's; a candidate identical to its parent is refused as pointless,
    unless the parent was blocked or rolled back: such a version never moves again, so a copy is how it is
    gated once more (after a policy change, or once what stopped it has passed).
    """
    if parent is not None and parent.kind != "adapter":
        raise BadRequest(f"version {parent.id} is a {parent.kind}; compose from a policy (adapter) version")
    if parent is not None and parent.erased_at is not None:
        # Its adapter learned from an erased user: a new version must not carry it back to users.
        raise Conflict(f"version {parent.id} was trained on data of an erased user; compose from another")
    if system_prompt is not None:
        check_system_prompt(system_prompt)
    prompt, settings = composed_parts(parent, system_prompt, decoding)
    same = parent is not None and prompt == parent.system_prompt and settings == version_decoding(parent)
    if same and parent.state not in ENDED:
        raise BadRequest(
            f"nothing differs from {parent.id}: give a system prompt or a decoding setting to change"
        )
    if parent is None and prompt is None and not settings:
        raise BadRequest("nothing to compose: give a system prompt or a decoding setting")
    lineage = {k: getattr(parent, k) for k in INHERITED} if parent else {}
    if snapshot_hash is not None:
        # The adapter's training snapshot stays its lineage: erasure finds versions by it. A parent with no
        # adapter was only held out on its snapshot, and a newer one may take its place.
        trained_on = lineage.get("snapshot_hash") if lineage.get("artifact_path") else None
        if trained_on not in (None, snapshot_hash):
            raise BadRequest(
                f"the parent's adapter was trained on snapshot {trained_on[:12]}; the "
                "candidate is held out on that one — leave out --snapshot",
                param="snapshot",
            )
        lineage["snapshot_hash"] = snapshot_hash
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:16] if prompt else None
    return registry.register(
        kind="adapter",
        base_model=parent.base_model if parent else base_model,
        actor=actor,
        parent_id=parent.id if parent else None,
        system_prompt=prompt,
        decoding=settings or None,
        details={
            "parent": parent.id if parent else "base",
            "reason": reason,
            "decoding": settings,
            "system_prompt_sha256": digest,
        },
        **lineage,
    )
