"""From user input to work items: validation, stable ids and prompts.

An item is a string or a dict. A dict's ``id`` field is its id; otherwise the id is a hash of the
item's content, so the same input gets the same id on every run and a re-run can skip what is done.
The n-th repeat (n >= 2) of the same content gets ``<hash>-<n>``, so every input position has a
record of its own and the ids stay the same across runs. Explicit ids must be unique.

Everything that would make a request fail later for reasons that are the input's fault is refused
here, naming the item (``items[3]``, ``input_path line 12``) and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.sandbox

from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.idindex import IdIndex, id_key

RawItem = str | dict[str, Any]

_UNSENDABLE = "which cannot be sent as UTF-8; fix or drop that character"
_MAX_POSITION = 2**31  # ItemIds keeps positions in 32 bits (with a flag)
_GENERATED_ID = re.compile(r"item-[0-9a-f]{20}(?:-[0-9]+)?")


@dataclass(slots=True)
class WorkItem:
    id: str
    prompt: str
    index: int = -1  # position in the input, so results can be put back in input order
    # Set by ItemIds: no other item of the same input has this id, so the engine's feeder does not
    # keep a second index of ids to find duplicates (~35 MB less at a million items).
    unique: bool = False


# -- text that cannot be sent ------------------------------------------------------------------


def surrogate_problem(text: str) -> str | None:
    """None when ``text`` encodes as UTF-8, else what is wrong with it (for an error message).

    Only an unpaired surrogate (half an emoji, e.g. from a JSON ``"\\ud83d"`` escape or a badly cut
    string) fails: one encode, no copy at all for ASCII text."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds an unpaired surrogate (\\u{ord(text[exc.start]):04x} at character {exc.start}), {_UNSENDABLE}"
    return None


def printable(text: str) -> str:
    """``text`` safe to put in a message or a log line (unpaired surrogates escaped)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _find_unsendable(value: Any, path: str) -> str | None:
    """Where in an item the unsendable string is, as the tail of an error message."""
    if isinstance(value, str):
        problem = surrogate_problem(value)
        return f"field '{path}' {problem}" if problem else None
    if isinstance(value, dict):
        for key, sub in value.items():
            if isinstance(key, str):
                problem = surrogate_problem(key)
                if problem:
                    where = f" (in '{path}')" if path else ""
                    return f"a field name{where} {problem}"
            found = _find_unsendable(sub, f"{path}.{key}" if path else str(key))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, sub in enumerate(value):
            found = _find_unsendable(sub, f"{path}[{index}]")
            if found:
                return found
    return None


# -- ids ---------------------------------------------------------------------------------------


def _canonical(raw: dict[str, Any]) -> str:
    return json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _hash_id(payload: str) -> str:
    return "item-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


def stable_id(raw: RawItem) -> str:
    """Content hash of an item: same input, same id, across runs and machines."""
    return _hash_id(raw if isinstance(raw, str) else _canonical(raw))


def has_explicit_id(raw: Any) -> bool:
    return isinstance(raw, dict) and raw.get("id") not in (None, "")


def item_id(raw: RawItem) -> str:
    if has_explicit_id(raw):
        return str(raw["id"])  # type: ignore[index]
    return stable_id(raw)


def _explicit_id(raw: dict[str, Any], where: str) -> str | None:
    if not has_explicit_id(raw):
        return None
    value = raw["id"]
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise FlexInputError(
        f"{where}: field 'id' must be a string or an integer, got {type(value).__name__} {printable(repr(value)):.60}"
    )


class ItemIds:
    """Gives every input position its own id, and refuses explicit ids that repeat.

    Memory: ids are kept as 128-bit digests with their position (:class:`IdIndex`, 20-40 bytes
    per item), not as strings: a million-item input costs ~40 MB here instead of ~200. The
    position is what an error names (``items[3]``), so a duplicate is still reported with both."""

    def __init__(self, label: Callable[[int], str]) -> None:
        self._label = label
        # id digest -> position << 1 | 1 if the id was explicit yet shaped like a generated one
        self._seen = IdIndex("I")  # 32 bits: positions up to 2**31
        self._repeats = IdIndex("I")  # content-hash id digest -> occurrences so far (repeated ones only)

    def _earlier(self, key: int) -> tuple[int, bool] | None:
        """(position, explicit id shaped like a generated one) of the id already seen, or None."""
        slot = self._seen.find(key)
        if slot < 0:
            return None
        value = self._seen.value(slot)
        return value >> 1, bool(value & 1)

    def assign(self, item: WorkItem, position: int, *, explicit: bool) -> WorkItem:
        if position >= _MAX_POSITION:
            raise FlexInputError(f"{self._label(position)}: more than {_MAX_POSITION:,} items in one input; split it")
        seen = self._seen
        key = id_key(item.id)
        earlier = self._earlier(key)
        if explicit:
            looks_generated = bool(_GENERATED_ID.fullmatch(item.id))
            if earlier is not None:
                generated = looks_generated and not earlier[1]
                raise self._duplicate(item.id, earlier[0], position, generated=earlier[0] if generated else None)
            seen.add(key, position << 1 | looks_generated)
            item.unique = True
            return item
        if earlier is not None:
            base = item.id
            if earlier[1]:
                raise self._duplicate(base, earlier[0], position, generated=position)
            slot = self._repeats.add(key, 1)
            n = self._repeats.value(slot) + 1
            self._repeats.set_value(slot, 0, n)
            item.id = f"{base}-{n}"
            key = id_key(item.id)
            taken = self._earlier(key)
            if taken is not None:  # generated ids never repeat: the earlier one is explicit
                raise self._duplicate(item.id, taken[0], position, generated=position)
        seen.add(key, position << 1)
        item.unique = True
        return item

    def _duplicate(self, item_id: str, earlier: int, later: int, *, generated: int | None) -> FlexInputError:
        first, second = self._label(earlier), self._label(later)
        message = f"{first} and {second} both have id {item_id!r}"
        if generated is None:
            return FlexInputError(f"{message}; ids must be unique: fix or drop one of them")
        other = second if generated == earlier else first
        return FlexInputError(
            f"{message} ({self._label(generated)} has no 'id' field and got that id from its content"
            f"{', as a repeat of an earlier item' if item_id.count('-') > 1 else ''}); give {other} another id"
        )


# -- prompts -----------------------------------------------------------------------------------


class PromptBuilder:
    """Turns an item into its prompt. Dict items go through ``prompt_template`` (Jinja, the item is
    ``item``, beside the Airflow context values the operator passes in, such as ``ds`` and ``params``)
    or, without a template, their ``text`` field. Undefined template variables are errors:
    a silently empty prompt would be paid for and would be wrong."""

    def __init__(self, template: str | None = None, context: dict[str, Any] | None = None) -> None:
        self.template_source = template
        self.context = dict(context or {})  # extra template variables (ds, params, run_id...)
        self._template: jinja2.Template | None = None
        if template is not None:
            if not isinstance(template, str):
                raise FlexInputError(f"prompt_template: expected a Jinja string, got {type(template).__name__}")
            problem = surrogate_problem(template)
            if problem:
                raise FlexInputError(f"prompt_template: {problem}")
            env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
            try:
                self._template = env.from_string(template)
            except jinja2.TemplateSyntaxError as exc:
                raise FlexInputError(
                    f"prompt_template: invalid Jinja syntax at line {exc.lineno}: {printable(str(exc.message))}"
                ) from exc

    def build(self, raw: Any, where: str) -> WorkItem:
        """Validate one raw item; ``where`` names it in errors (``items[3]``, ``input_path line 7``)."""
        if isinstance(raw, str):
            problem = surrogate_problem(raw)
            if problem:
                raise FlexInputError(f"{where}: the text {problem}")
            if self._template is None:
                return WorkItem(_hash_id(raw), raw)
            return WorkItem(_hash_id(raw), self._render({"text": raw, "id": None}, where))
        if isinstance(raw, dict):
            explicit = _explicit_id(raw, where)
            try:
                canonical = _canonical(raw)
            except Exception as exc:  # tuple keys, int and str keys mixed, circular, too deep...
                raise FlexInputError(
                    f"{where}: not JSON-like ({printable(str(exc))}); use string keys and JSON values"
                ) from None
            if surrogate_problem(canonical):
                raise FlexInputError(f"{where}: {_find_unsendable(raw, '') or 'a value ' + _UNSENDABLE}")
            if self._template is not None:
                prompt = self._render(raw, where)
            elif "text" in raw:
                prompt = raw["text"]
                if not isinstance(prompt, str):
                    raise FlexInputError(f"{where}: field 'text' must be a string, got {type(prompt).__name__}")
            else:
                keys = sorted(map(str, raw))[:10]
                raise FlexInputError(
                    f"{where}: dict item has no 'text' field (keys: {keys}); "
                    "add 'text' or set prompt_template, e.g. '{{ item.subject }}: {{ item.body }}'"
                )
            return WorkItem(explicit if explicit is not None else _hash_id(canonical), prompt)
        raise FlexInputError(f"{where}: expected a string or a dict, got {type(raw).__name__}")

    def _render(self, item: Any, where: str) -> str:
        assert self._template is not None
        try:
            prompt = self._template.render(self.context, item=item)
        except jinja2.UndefinedError as exc:
            raise FlexInputError(
                f"{where}: prompt_template refers to a missing field: {printable(str(exc.message))}"
            ) from exc
        except jinja2.TemplateError as exc:
            raise FlexInputError(f"{where}: prompt_template failed: {printable(str(exc))}") from exc
        except Exception as exc:  # the template did arithmetic on the wrong types, divided by zero...
            raise FlexInputError(
                f"{where}: prompt_template failed: {type(exc).__name__}: {printable(str(exc))}"
            ) from exc
        problem = surrogate_problem(prompt)
        if problem:
            raise FlexInputError(f"{where}: the prompt rendered from prompt_template {problem}")
        return prompt


# -- input sources -----------------------------------------------------------------------------


def _decode_line(line: str | bytes, where: str, first: bool) -> str:
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FlexInputError(
                f"{where}: not valid UTF-8 (byte 0x{line[exc.start]:02x} at position {exc.start}); "
                "save the file as UTF-8"
            ) from None
    if first and line.startswith("\ufeff"):  # a byte order mark, as some editors write
        line = line[1:]
    return line


def _parse_line(line: str, where: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise FlexInputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError:
        raise FlexInputError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise FlexInputError(f"{where}: not valid JSON ({printable(str(exc))[:200]})") from None


def parse_jsonl_line(line: str | bytes, lineno: int, source: str = "input_path") -> Any:
    """One JSON Lines record, or None for a blank line (a ``null`` record is returned as None too;
    ``iter_jsonl`` skips blank lines itself so that null is rejected as an item). Errors name the
    line number."""
    where = f"{source} line {lineno}"
    line = _decode_line(line, where, lineno == 1)
    if not line.strip():
        return None
    return _parse_line(line, where)


def enumerate_jsonl(lines: Iterable[str | bytes], label: Callable[[int], str]) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, record)`` for each non-blank line. Lines may be bytes (read the file in
    binary: a line that is not UTF-8 is then named, not a decoder error halfway through the file).
    Memory stays flat however long the file."""
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = label(lineno)
        text = _decode_line(line, where, lineno == 1)
        if text.strip():
            yield lineno, _parse_line(text, where)


def iter_jsonl(lines: Iterable[str | bytes], source: str = "input_path") -> Iterator[tuple[str, Any]]:
    """Yield ``(where, record)`` for each non-blank line; memory stays flat however long the file."""
    for lineno, raw in enumerate_jsonl(lines, lambda n: f"{source} line {n}"):
        yield f"{source} line {lineno}", raw


def iter_list(items: Iterable[Any], source: str = "items") -> Iterator[tuple[str, Any]]:
    for index, raw in enumerate(items):
        yield f"{source}[{index}]", raw


def iter_work_items(
    numbered: Iterable[tuple[int, Any]], builder: PromptBuilder, label: Callable[[int], str]
) -> Iterator[WorkItem]:
    """Build every ``(position, raw item)`` into a :class:`WorkItem` with an id of its own.
    ``label`` names a position in errors (``lambda i: f"items[{i}]"``)."""
    ids = ItemIds(label)
    for position, raw in numbered:
        item = builder.build(raw, label(position))
        yield ids.assign(item, position, explicit=has_explicit_id(raw))
