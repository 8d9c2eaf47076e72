"""JSON mode on the embedded model: lm-format-enforcer limits each sampled token to those that keep the text
valid JSON (`json_object`) or valid under the client's schema (`json_schema`).

lm-format-enforcer's transformers integration does not import under transformers 5, so the token table the
enforcer needs is built here as that integration builds it (each token decoded after a "0", to see whether
it starts a word). Building it takes about a second and happens once, at the first JSON request.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
from collections.abc import Callable
from typing import Any

from tuneloop.errors import BadRequest

log = logging.getLogger("tuneloop")
Allowed = Callable[[list[int]], list[int] | None]  # generated tokens -> allowed next ids (None: any)
UNIONS = frozenset({"anyOf", "oneOf"})
MAX_UNION_DEPTH = 32  # unions nested through `$ref` may refer back to themselves
SCHEMA_PARAM = "response_format.json_schema.schema"
# The enforcer turns regular expressions into automata on the event loop, exponential in the worst case
# ("^(a|b)*a(a|b){18}$" froze a server for every tenant): a schema that holds one is refused.
REGEX_KEYWORDS = {"pattern", "patternProperties"}
NAMED_SCHEMAS = {"properties", "$defs", "definitions", "dependentSchemas"}


class JsonMode:
    """Builds, per request, the function that says which tokens may come next."""

    def __init__(self, tokenizer: Any, eos_ids: set[int], vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self._eos_ids = sorted(eos_ids)
        self._vocab_size = vocab_size
        self._data: Any = None
        self._lock = asyncio.Lock()

    async def ready(self) -> None:
        """Build the token table once (off the event loop); 400 when lm-format-enforcer is missing."""
        if importlib.util.find_spec("lmformatenforcer") is None:
            raise BadRequest(
                "response_format on the embedded model needs lm-format-enforcer — "
                "`pip install 'tuneloop[json]'` — or serve through an upstream that constrains decoding",
                param="response_format",
            )
        async with self._lock:
            if self._data is None:
                # Its own failures are logged through the root logger with the answer so far, prompt included.
                logging.getLogger().addFilter(_no_enforcer_prefixes)
                self._data = await asyncio.to_thread(self._build)

    def _build(self) -> Any:
        from lmformatenforcer import TokenEnforcerTokenizerData

        tokenizer = self._tokenizer
        zero = tokenizer.encode("0", add_special_tokens=False)[-1]
        special = set(tokenizer.all_special_ids)
        regular = []
        for token in range(min(len(tokenizer), self._vocab_size)):
            if token in special:
                continue
            after_zero = tokenizer.decode([zero, token])[1:]
            regular.append((token, after_zero, len(after_zero) > len(tokenizer.decode([token]))))
        decode = functools.partial(_decode, tokenizer)
        return TokenEnforcerTokenizerData(regular, decode, self._eos_ids, False, self._vocab_size)

    def allowed(self, response_format: dict[str, Any], prompt_ids: list[int]) -> Allowed:
        """The constraint for one sequence; a schema the enforcer cannot read is a 400 naming it."""
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        assert self._data is not None, "await ready() first"
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        _check_schema(schema, schema)
        try:
            enforcer = TokenEnforcer(self._data, JsonSchemaParser(schema))
        except Exception as exc:
            raise BadRequest(
                f"response_format: the embedded model cannot constrain to this schema ({exc})",
                param=SCHEMA_PARAM,
            ) from exc

        def next_tokens(tokens: list[int]) -> list[int] | None:
            try:
                return enforcer.get_allowed_tokens(prompt_ids + tokens).allowed_tokens
            except Exception:
                # A parser failure must not fail the batch the sequence shares: it goes on unconstrained.
                log.exception("JSON constraint failed; the rest of this answer is unconstrained")
                return None

        return next_tokens


def _check_schema(node: Any, root: dict[str, Any]) -> None:
    """400 for what the enforcer cannot be trusted with: regular expressions, and a `$ref` that does not
    point inside the schema (the enforcer would end the answer early at it, mid-JSON)."""
    if isinstance(node, list):
        for item in node:
            _check_schema(item, root)
        return
    if not isinstance(node, dict):
        return
    if found := REGEX_KEYWORDS & node.keys():
        raise BadRequest(
            f"response_format: the embedded model's JSON mode does not take `{sorted(found)[0]}` "
            "(regular expressions); drop it, or serve through an upstream that constrains decoding",
            param=SCHEMA_PARAM,
        )
    if "$ref" in node and _resolve(root, node) is None:
        raise BadRequest(
            "response_format: a `$ref` must point inside the schema (`#/...`); this one leads nowhere "
            "or round in a circle",
            param=SCHEMA_PARAM,
        )
    for key in UNIONS & node.keys():
        branches = node[key] if isinstance(node[key], list) else []
        if sum(_takes_string(branch, root) for branch in branches) > 1:
            # The enforcer follows every string branch at once, token by token: a `date | date-time`
            # union took 20 s a token, on the one thread that generates for every tenant.
            raise BadRequest(
                f"response_format: the embedded model's JSON mode does not take an `{key}` with more than "
                "one branch that accepts a string (it makes generation crawl for every tenant); keep one "
                "string branch, or serve through an upstream that constrains decoding",
                param=SCHEMA_PARAM,
            )
    for key, value in node.items():
        # Under these keys a dict maps names (a field may be called "pattern") to schemas.
        named = key in NAMED_SCHEMAS and isinstance(value, dict)
        for sub in value.values() if named else [value]:
            _check_schema(sub, root)


def _takes_string(node: Any, root: dict[str, Any], depth: int = 0) -> bool:
    """Whether the schema `node` (its `$ref` followed) accepts some string."""
    if isinstance(node, dict) and "$ref" in node:
        node = _resolve(root, node)
    if not isinstance(node, dict) or depth > MAX_UNION_DEPTH:
        return node is True
    kinds = node.get("type")
    if kinds is not None:
        return kinds == "string" or (isinstance(kinds, list) and "string" in kinds)
    if "enum" in node or "const" in node:
        values = node["enum"] if isinstance(node.get("enum"), list) else []
        return any(isinstance(v, str) for v in [*values, node.get("const")])
    unions = [b for key in UNIONS & node.keys() if isinstance(node[key], list) for b in node[key]]
    if unions:
        return any(_takes_string(b, root, depth + 1) for b in unions)
    return True  # no type: any value, strings among them


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> Any:
    """What `node`'s `$ref` chain ends at inside `root`; None for a chain that leaves it or goes round."""
    seen: set[str] = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#") or ref in seen:
            return None
        seen.add(ref)
        node = root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
    return node


def _no_enforcer_prefixes(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Unknown LMFormatEnforcer Problem")


def _decode(tokenizer: Any, tokens: list[int]) -> str:
    # A trailing U+FFFD is half a multi-byte character; the enforcer must not read it as text.
    return tokenizer.decode(tokens).rstrip("\ufffd")
