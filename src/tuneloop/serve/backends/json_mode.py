"""JSON mode on the embedded model: lm-format-enforcer limits each sampled token to those that keep the text
valid JSON (`json_object`) or valid under the client's schema (`json_schema`).

lm-format-enforcer's transformers integration does not import under transformers 5, so the token table the
enforcer needs is built here as that integration builds it (each token decoded after a "0", to see whether
it starts a word). Building it takes about a second and happens once, at the first JSON request.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import importlib.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
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
DATA_KEYS = {"enum", "const", "default", "examples"}  # values, not schemas
KINDS = frozenset({"object", "array", "string", "number", "boolean", "null"})
# What a schema may cost. The enforcer follows it on the model's thread, at every token of every tenant's
# batch; measured on 2 cores: ~2 ms a token per parse it keeps open (a union's branches that start alike:
# 100 took 0.1-0.2 s a token, 5,000 froze every tenant for 35 s), ~0.03 ms per property of the object being
# written. Ordinary schemas stay far below; OpenAI's structured outputs allow 5,000 properties, which cost
# up to 0.16 s a token here, and 1,000 enum values in all, as here.
MAX_SCHEMA_CHARS = 100_000  # serialized; OpenAI allows 120,000 characters of names and enum values
MAX_PROPERTIES = 1_000
MAX_ENUM_VALUES = 1_000
MAX_OPEN_PARSES = 32  # branches that start alike, through nested unions and `$ref`s
MAX_SCHEMA_DEPTH = 32  # subschemas within subschemas, `$ref`s followed: OpenAI allows 10 levels of objects
BOUNDS = {
    "minLength": "maxLength",
    "minItems": "maxItems",
}  # a lower bound and the upper one it must not pass
# Bounds the enforcer reads past: it writes any number, and any count of properties, whatever these say.
UNHONOURED = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minProperties",
    "maxProperties",
)


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

    async def allowed(self, response_format: dict[str, Any], prompt_ids: list[int]) -> Allowed:
        """The constraint for one request's sequences, built in a worker thread: neither the event loop nor
        the model's thread, which generates for every tenant, waits for it. A schema the enforcer cannot
        follow (or not cheaply enough) is a 400 naming why."""
        await self.ready()
        return await asyncio.to_thread(self._allowed, response_format, prompt_ids)

    def _allowed(self, response_format: dict[str, Any], prompt_ids: list[int]) -> Allowed:
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
        _check_cost(schema)
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

        next_tokens([])  # the first step, the dearest, here: the enforcer keeps it for the model's thread
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
    if "const" in node:
        raise BadRequest(
            "response_format: the embedded model's JSON mode does not take `const`; for a string, number "
            "or boolean send a one-value `enum`, or serve through an upstream that constrains decoding",
            param=SCHEMA_PARAM,
        )
    if found := [key for key in UNHONOURED if key in node]:
        raise BadRequest(
            f"response_format: the embedded model's JSON mode does not take `{found[0]}` (it would write "
            "any number, or any count of properties, whatever the bound says); drop it and check the value "
            "in your app, or serve through an upstream that constrains decoding",
            param=SCHEMA_PARAM,
        )
    for low, high in BOUNDS.items():
        if any(_number(node.get(key)) and node[key] < 0 for key in (low, high)):
            raise BadRequest(f"response_format: `{low}`/`{high}` cannot be negative", param=SCHEMA_PARAM)
        if _number(node.get(low)) and _number(node.get(high)) and node[low] > node[high]:
            raise BadRequest(
                f"response_format: `{low}` {node[low]} is above `{high}` {node[high]}: nothing fits the "
                "schema",
                param=SCHEMA_PARAM,
            )
    if isinstance(node.get("enum"), list) and "type" in node:
        declared = _kinds({"type": node["type"]}, root)
        if not any(_kind(value) in declared for value in node["enum"]):
            raise BadRequest(
                "response_format: no value of `enum` is of the schema's `type`: nothing fits the schema",
                param=SCHEMA_PARAM,
            )
    elif node.get("enum") == []:
        raise BadRequest("response_format: an empty `enum`: nothing fits the schema", param=SCHEMA_PARAM)
    properties = node.get("properties")
    if isinstance(properties, dict) and any(sub is False for sub in properties.values()):
        raise BadRequest(
            "response_format: a property whose schema is `false` can hold no value; leave it out of "
            "`properties` (and `required`)",
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
        if sum("string" in _kinds(branch, root) for branch in branches) > 1:
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


def _kinds(node: Any, root: dict[str, Any], depth: int = 0) -> frozenset[str]:
    """The JSON types of the values the schema `node` (its `$ref` followed) accepts."""
    if isinstance(node, dict) and "$ref" in node:
        node = _resolve(root, node)
    if not isinstance(node, dict) or depth > MAX_UNION_DEPTH:
        return KINDS if node is True else frozenset()
    kinds = node.get("type")
    if kinds is not None:
        names = kinds if isinstance(kinds, list) else [kinds]
        return frozenset("number" if k == "integer" else k for k in names) & KINDS
    if isinstance(node.get("enum"), list):
        return frozenset(_kind(v) for v in node["enum"])
    unions = [b for key in UNIONS & node.keys() if isinstance(node[key], list) for b in node[key]]
    if unions:
        return frozenset().union(*(_kinds(b, root, depth + 1) for b in unions))
    return KINDS  # no type: any value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", dict: "object", list: "array"}.get(type(value), "null")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_cost(schema: dict[str, Any]) -> None:
    """400 for a schema past one of the bounds on what the enforcer follows (MAX_SCHEMA_CHARS and on)."""
    chars = len(json.dumps(schema))
    if chars > MAX_SCHEMA_CHARS:
        raise _too_costly(f"is {chars:,} characters long as JSON", MAX_SCHEMA_CHARS)
    walk = _Walk(schema)
    parses = walk.open_parses(schema, 0)
    if walk.properties > MAX_PROPERTIES:
        raise _too_costly(f"has {walk.properties:,} properties in all", MAX_PROPERTIES)
    if walk.enum_values > MAX_ENUM_VALUES:
        raise _too_costly(f"has {walk.enum_values:,} enum values in all", MAX_ENUM_VALUES)
    if parses > MAX_OPEN_PARSES:
        raise _too_costly(
            f"has unions (anyOf/oneOf) that keep {parses:,} branches of one JSON type open at once, nested "
            "unions and $refs counted",
            MAX_OPEN_PARSES,
        )


def _too_costly(what: str, limit: int) -> BadRequest:
    return BadRequest(
        f"response_format: this schema {what}; the embedded model's JSON mode takes at most {limit:,} (it "
        "follows the schema at every token, on the thread that generates for every tenant); send a smaller "
        "schema, or serve through an upstream that constrains decoding",
        param=SCHEMA_PARAM,
    )


WALKING = -1  # a subschema whose walk has begun and not ended


@dataclass
class _Walk:
    """One pass over a schema, `$ref`s followed and each subschema walked once, adding up what the
    enforcer will follow."""

    root: dict[str, Any]
    properties: int = 0
    enum_values: int = 0
    parses: dict[int, int] = field(default_factory=dict)  # id(subschema) -> open_parses

    def open_parses(self, node: Any, depth: int) -> int:
        """How many parses the enforcer may keep open at once inside `node`: a union's branches of one
        JSON type, each with the parses it opens in turn."""
        if depth > MAX_SCHEMA_DEPTH:
            raise _too_costly(f"nests subschemas more than {MAX_SCHEMA_DEPTH} levels deep", MAX_SCHEMA_DEPTH)
        if isinstance(node, dict) and "$ref" in node:
            node = _resolve(self.root, node)
        if not isinstance(node, dict):
            return 1
        if self.parses.get(id(node)) == WALKING:
            # Each round of a cycle can open as many parses again (an array of unions of arrays of itself
            # doubles them at every `[`): no count bounds it, and one such request held every tenant's
            # answers for minutes.
            raise BadRequest(
                "response_format: the embedded model's JSON mode cannot follow a schema that refers back "
                "to itself ($ref in a cycle); unroll it to a fixed depth, or serve through an upstream",
                param=SCHEMA_PARAM,
            )
        if id(node) in self.parses:
            return self.parses[id(node)]
        self.parses[id(node)] = WALKING
        if isinstance(node.get("properties"), dict):
            self.properties += len(node["properties"])
        if isinstance(node.get("enum"), list):
            self.enum_values += len(node["enum"])
        most = 1
        for key, value in node.items():
            if key in DATA_KEYS:
                continue
            named = key in NAMED_SCHEMAS and isinstance(value, dict)
            subs = list(value.values()) if named else value if isinstance(value, list) else [value]
            opened = [self.open_parses(sub, depth + 1) for sub in subs]
            if key in UNIONS:
                alike: collections.Counter[str] = collections.Counter()
                for sub, count in zip(subs, opened, strict=True):
                    alike.update(dict.fromkeys(_kinds(sub, self.root), count))
                most = max([most, *alike.values()])
            else:
                most = max([most, *opened])
        self.parses[id(node)] = most
        return most


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
