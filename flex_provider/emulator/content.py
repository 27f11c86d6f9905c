"""Deterministic, input-dependent model output and token accounting.

Tests need output that is (a) stable for the same input, so re-runs and retries are comparable,
(b) different for different inputs, so a result can't be silently attached to the wrong document,
and (c) shaped like the real thing (structured output that validates, token usage that adds up).
Nothing here is random: everything derives from sha256 of the prompt. The output does NOT depend
on the model or service tier, so a request that falls back from flex to default yields the same
text - handy when asserting on results regardless of the path taken.

Prompt-cache rule (documented emulation, real OpenAI uses >= 1024 tokens):
the cacheable prefix is the request's instructions (Responses ``instructions`` plus leading
system/developer messages; Chat: leading system/developer messages). If it is at least
``cache_min_tokens`` (default 256) tokens and the same (model, prefix) was last served on the same
service tier, ``cached_tokens`` = prefix tokens rounded down to a multiple of 128. A request on a
different tier with the same prefix is a miss (reason ``service_tier_changed``) and moves the
prefix to the new tier.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 3
CACHE_BLOCK_TOKENS = 128
PROMPT_CACHE_MAX_ENTRIES = 20_000

_WORD_RE = re.compile(r"[a-z][a-z0-9'-]{2,}")
SALIENT_SCAN_CHARS = 8_000
_STOPWORDS_TEXT = """the and for are but not you all any can had her was one our out has have his how its may new now
    old see two way who did get let put say she too use that this with from they will would there their
    what about which when make like time just know take into year your good some could them than then
    these other also only over such most very been were more many much each those because while where
    should shall upon being after before between under again further here why both few own same so
    than does doing during above below off once until against through is it of to in on at by as an be
    or if no yes we us me my he him do"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())
_PREFIX_ROLES = frozenset(("system", "developer"))


def sha256_hex(*parts: str) -> str:
    """sha256 over the parts, NUL-separated so ("ab", "c") and ("a", "bc") differ."""
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def input_key(user_text: str) -> str:
    """Key used by the per-input stats: first 16 hex chars of sha256 of the user text only.

    Instructions are excluded on purpose: a DAG sends the same instructions with every document,
    so the user text is what identifies "a document".
    """
    return hashlib.sha256(user_text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def estimate_tokens(text: str) -> int:
    """Roughly 1 token per 4 characters, like OpenAI's rule of thumb."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


@dataclass(slots=True)
class Prompt:
    """The text parts of a request that matter for output and usage."""

    user_text: str
    prefix_text: str
    other_chars: int = 0
    n_messages: int = 0
    valid: bool = True
    error: str | None = None
    error_param: str | None = None

    @property
    def input_tokens(self) -> int:
        chars = len(self.user_text) + len(self.prefix_text) + self.other_chars
        return (chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS * self.n_messages

    @property
    def prefix_tokens(self) -> int:
        return estimate_tokens(self.prefix_text)

    @property
    def key(self) -> str:
        return input_key(self.user_text)


def _content_text(content: Any) -> str:
    """Text of a message ``content``: a string or a list of text parts (input_text / text / output_text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    texts.append(text)
            elif isinstance(part, str):
                texts.append(part)
        return "\n".join(texts)
    return ""


def _collect_messages(messages: list[Any], prefix: list[str], prompt: Prompt) -> list[str]:
    """Split messages into the cacheable prefix (leading system/developer) and user texts."""
    users: list[str] = []
    leading = True
    for item in messages:
        if not isinstance(item, dict):
            continue
        role = item.get("role")
        text = _content_text(item.get("content"))
        prompt.n_messages += 1
        if role in _PREFIX_ROLES and leading:
            prefix.append(text)
            continue
        leading = False
        if role == "user":
            users.append(text)
        else:
            prompt.other_chars += len(text)
    return users


def prompt_from_responses(body: dict[str, Any]) -> Prompt:
    """Extract the prompt from a ``POST /v1/responses`` body."""
    prompt = Prompt(user_text="", prefix_text="")
    prefix: list[str] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        prefix.append(instructions)
        prompt.n_messages += 1
    raw = body.get("input")
    if isinstance(raw, str):
        prompt.user_text = raw
        prompt.n_messages += 1
    elif isinstance(raw, list):
        prompt.user_text = "\n".join(_collect_messages(raw, prefix, prompt))
    elif raw is None:
        prompt.valid, prompt.error, prompt.error_param = False, "Missing required parameter: 'input'.", "input"
    else:
        prompt.valid, prompt.error, prompt.error_param = False, "Invalid type for 'input'.", "input"
    prompt.prefix_text = "\n".join(prefix)
    return prompt


def prompt_from_chat(body: dict[str, Any]) -> Prompt:
    """Extract the prompt from a ``POST /v1/chat/completions`` body."""
    prompt = Prompt(user_text="", prefix_text="")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        prompt.valid = False
        prompt.error = "Missing required parameter: 'messages'."
        prompt.error_param = "messages"
        return prompt
    prefix: list[str] = []
    prompt.user_text = "\n".join(_collect_messages(messages, prefix, prompt))
    prompt.prefix_text = "\n".join(prefix)
    return prompt


def salient_words(text: str, limit: int = 8) -> list[str]:
    """Most frequent non-stopwords, ties broken by first appearance (deterministic).

    Only the first ``SALIENT_SCAN_CHARS`` characters are scanned so a huge document costs the same
    as a big one; the hash in the answer still covers the whole text.
    """
    words = _WORD_RE.findall(text[:SALIENT_SCAN_CHARS].lower())
    counts = Counter(words)
    # dict.fromkeys keeps first-appearance order; the stable sort keeps it among equal counts.
    candidates = [w for w in dict.fromkeys(words) if w not in _STOPWORDS]
    candidates.sort(key=lambda w: -counts[w])
    return candidates[:limit]


def render_text(prompt: Prompt) -> str:
    """Plain-text answer: a fake summary built from the input's salient words plus a short hash."""
    words = salient_words(prompt.user_text)
    ref = sha256_hex(prompt.user_text, prompt.prefix_text)[:8]
    topic = ", ".join(words) if words else "no salient terms"
    return f"Summary: {topic} (~{estimate_tokens(prompt.user_text)} tokens; ref {ref})."


# --------------------------------------------------------------------------------------- reasoning

_EFFORT_FACTOR = {"none": 0.0, "minimal": 0.0, "low": 0.5, "medium": 1.0, "high": 2.0, "xhigh": 3.0}


def is_reasoning_model(model: str) -> bool:
    """o-series and gpt-5 family report reasoning tokens."""
    return model.startswith("gpt-5") or (len(model) > 1 and model[0] == "o" and model[1].isdigit())


def reasoning_tokens(model: str, effort: str | None, prompt: Prompt) -> int:
    """Deterministic reasoning-token count: 64..512 scaled by effort, 0 for non-reasoning models."""
    if not is_reasoning_model(model):
        return 0
    factor = _EFFORT_FACTOR.get(effort or "medium", 1.0)
    base = 64 * (1 + int(sha256_hex("reasoning", prompt.user_text, prompt.prefix_text)[:4], 16) % 8)
    return int(base * factor)


# ------------------------------------------------------------------------------- structured output


def generate_json(schema: dict[str, Any], prompt: Prompt) -> str:
    """JSON text conforming to ``schema`` (the subset Structured Outputs and Pydantic produce)."""
    gen = _JsonGenerator(schema, prompt)
    return json.dumps(gen.value(schema, name="root", depth=0), ensure_ascii=False)


def generate_json_object(prompt: Prompt) -> str:
    """Answer for ``{"type": "json_object"}``: any JSON object, here a small summary record."""
    words = salient_words(prompt.user_text)
    obj = {
        "summary": render_text(prompt),
        "keywords": words[:5],
        "ref": sha256_hex(prompt.user_text, prompt.prefix_text)[:8],
    }
    return json.dumps(obj, ensure_ascii=False)


class _JsonGenerator:
    """Walks a JSON schema producing a value; choices come from an RNG seeded by the prompt hash."""

    MAX_DEPTH = 4

    def __init__(self, root: dict[str, Any], prompt: Prompt) -> None:
        self.root = root
        self.rng = random.Random(int(sha256_hex("json", prompt.user_text, prompt.prefix_text)[:16], 16))
        self.words = salient_words(prompt.user_text, limit=24) or ["none"]

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Follow local ``$ref`` pointers (``#/$defs/X``, ``#/definitions/X``, ``#``)."""
        seen = 0
        while isinstance(schema, dict) and "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            target: Any = self.root
            if ref.startswith("#"):
                for part in [p for p in ref[1:].split("/") if p]:
                    part = part.replace("~1", "/").replace("~0", "~")
                    target = target.get(part, {}) if isinstance(target, dict) else {}
            else:
                target = {}
            extra = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **extra} if extra else target
            seen += 1
        return schema if isinstance(schema, dict) else {}

    def value(self, schema: Any, *, name: str, depth: int) -> Any:
        if schema is True or not isinstance(schema, dict):
            return self.string({}, name)
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.value(self.pick_variant(schema[key], depth), name=name, depth=depth)
        if schema.get("allOf"):
            merged: dict[str, Any] = {}
            for sub in schema["allOf"]:
                sub = self.resolve(sub)
                props = {**merged.get("properties", {}), **sub.get("properties", {})}
                required = [*merged.get("required", []), *sub.get("required", [])]
                merged = {**merged, **sub, "properties": props, "required": required}
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self.value({**merged, **rest}, name=name, depth=depth)
        typ = schema.get("type")
        if isinstance(typ, list):
            non_null = [t for t in typ if t != "null"]
            typ = non_null[0] if non_null else "null"
        if typ is None:
            if "properties" in schema:
                typ = "object"
            elif "items" in schema or "prefixItems" in schema:
                typ = "array"
            else:
                typ = "string"
        if typ == "object":
            return self.object(schema, depth)
        if typ == "array":
            return self.array(schema, name, depth)
        if typ == "integer":
            return self.integer(schema)
        if typ == "number":
            return self.number(schema)
        if typ == "boolean":
            return self.rng.random() < 0.5
        if typ == "null":
            return None
        return self.string(schema, name)

    def pick_variant(self, variants: list[Any], depth: int) -> Any:
        """Prefer a non-null variant (so Optional fields carry data) unless nesting is too deep."""
        resolved = [self.resolve(v) if isinstance(v, dict) else v for v in variants]
        nulls = [v for v in resolved if isinstance(v, dict) and v.get("type") == "null"]
        others = [v for v in resolved if not (isinstance(v, dict) and v.get("type") == "null")]
        if nulls and (depth >= self.MAX_DEPTH or not others):
            return nulls[0]
        return others[0] if others else resolved[0]

    def object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        out: dict[str, Any] = {}
        for key, sub in props.items():
            if depth >= self.MAX_DEPTH and key not in required:
                continue
            out[key] = self.value(sub, name=key, depth=depth + 1)
        extra = schema.get("additionalProperties")
        if not props and isinstance(extra, dict):
            # A dict[str, X] field: produce one or two entries keyed by salient words.
            for word in self.words[: 1 + self.rng.randrange(2)]:
                out[word] = self.value(extra, name=word, depth=depth + 1)
        return out

    def array(self, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [self.value(s, name=name, depth=depth + 1) for s in prefix]
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, 3)))
        count = lo if depth >= self.MAX_DEPTH else max(lo, min(hi, 1 + self.rng.randrange(3)))
        items = schema.get("items", {})
        values = [self.value(items, name=name, depth=depth + 1) for _ in range(count)]
        if schema.get("uniqueItems"):
            unique: list[Any] = []
            for v in values:
                if v not in unique:
                    unique.append(v)
            values = unique if len(unique) >= lo else values
        return values

    def integer(self, schema: dict[str, Any]) -> int:
        lo, hi = self.bounds(schema, integer=True)
        step = schema.get("multipleOf")
        value = self.rng.randint(int(lo), int(hi))
        if isinstance(step, int) and step > 0:
            value = (value // step) * step
            if value < lo:
                value += step
        return value

    def number(self, schema: dict[str, Any]) -> float:
        lo, hi = self.bounds(schema, integer=False)
        if hi <= lo:
            return float(lo)
        return min(max(round(lo + (hi - lo) * self.rng.random(), 2), lo), hi)

    @staticmethod
    def bounds(schema: dict[str, Any], *, integer: bool) -> tuple[float, float]:
        """Inclusive [lo, hi] from minimum/maximum/exclusive*; defaults 0..100 (or around a bound)."""
        eps = 1 if integer else 0.01
        lo: float | None = schema.get("minimum")
        hi: float | None = schema.get("maximum")
        if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
            lo = schema["exclusiveMinimum"] + eps
        if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
            hi = schema["exclusiveMaximum"] - eps
        if lo is None and hi is None:
            lo, hi = 0, 100
        elif lo is None:
            assert hi is not None
            lo = min(0, hi)
        elif hi is None:
            hi = max(lo + 100, lo)
        assert lo is not None and hi is not None
        if integer:
            lo, hi = int(-(-lo // 1)), int(hi // 1)
        return (lo, hi) if hi >= lo else (lo, lo)

    def string(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        n = self.rng.randrange(1 << 30)
        if fmt == "date-time":
            text = f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:{n % 60:02d}:00Z"
        elif fmt == "date":
            text = f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}"
        elif fmt == "time":
            text = f"{n % 24:02d}:{n % 60:02d}:00"
        elif fmt == "email":
            text = f"{self.words[n % len(self.words)]}@example.com"
        elif fmt in ("uri", "url"):
            text = f"https://example.com/{self.words[n % len(self.words)]}"
        elif fmt == "uuid":
            h = sha256_hex(name, str(n))
            text = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
        else:
            count = 2 + n % 5
            start = (n >> 3) % len(self.words)
            picked = [self.words[(start + i) % len(self.words)] for i in range(count)]
            text = " ".join(dict.fromkeys(picked))
        min_len = int(schema.get("minLength", 0))
        max_len = schema.get("maxLength")
        if len(text) < min_len:
            text = (text + " " + " ".join(self.words) * (min_len // max(1, len(text)) + 1))[:min_len]
            text = text.ljust(min_len, "x")
        if isinstance(max_len, int) and len(text) > max_len:
            text = text[:max_len]
        return text


# ---------------------------------------------------------------------------------- prompt cache


@dataclass(slots=True)
class CacheResult:
    """Outcome of one prompt-cache lookup."""

    cached_tokens: int = 0
    eligible: bool = False
    miss_reason: str | None = None


@dataclass
class PromptCache:
    """(model, prefix) -> tier it was last served on; bounded LRU so memory stays flat."""

    entries: OrderedDict[str, str] = field(default_factory=OrderedDict)
    max_entries: int = PROMPT_CACHE_MAX_ENTRIES

    def lookup(self, model: str, prompt: Prompt, tier: str, min_tokens: int) -> CacheResult:
        """Check the cache without storing; O(1) apart from hashing the prefix."""
        tokens = prompt.prefix_tokens
        if not prompt.prefix_text or tokens < min_tokens:
            return CacheResult()
        seen_tier = self.entries.get(sha256_hex(model, prompt.prefix_text))
        if seen_tier is None:
            return CacheResult(eligible=True)
        if seen_tier != tier:
            return CacheResult(eligible=True, miss_reason="service_tier_changed")
        return CacheResult(cached_tokens=(tokens // CACHE_BLOCK_TOKENS) * CACHE_BLOCK_TOKENS, eligible=True)

    def store(self, model: str, prompt: Prompt, tier: str, min_tokens: int) -> None:
        """Remember that this prefix was just served on ``tier`` (called for successful requests)."""
        if not prompt.prefix_text or prompt.prefix_tokens < min_tokens:
            return
        key = sha256_hex(model, prompt.prefix_text)
        self.entries[key] = tier
        self.entries.move_to_end(key)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()
