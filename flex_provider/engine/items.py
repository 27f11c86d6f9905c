"""From user input to work items: validation, stable ids and prompts.

An item is a string or a dict. A dict's ``id`` field is its id; otherwise the id is a hash of the
item's content, so the same input gets the same id on every run and a re-run can skip what is done.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.sandbox

from flex_provider.engine.errors import FlexInputError

RawItem = str | dict[str, Any]


@dataclass(slots=True)
class WorkItem:
    id: str
    prompt: str
    index: int = -1  # position in the input, so results can be put back in input order


def stable_id(raw: RawItem) -> str:
    """Content hash of an item: same input, same id, across runs and machines."""
    if isinstance(raw, str):
        payload = raw
    else:
        payload = json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return "item-" + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]


def item_id(raw: RawItem) -> str:
    if isinstance(raw, dict) and raw.get("id") not in (None, ""):
        return str(raw["id"])
    return stable_id(raw)


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
            env = jinja2.sandbox.SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
            try:
                self._template = env.from_string(template)
            except jinja2.TemplateSyntaxError as exc:
                raise FlexInputError(
                    f"prompt_template: invalid Jinja syntax at line {exc.lineno}: {exc.message}"
                ) from exc

    def build(self, raw: Any, where: str) -> WorkItem:
        """Validate one raw item; ``where`` names it in errors (``items[3]``, ``input_path line 7``)."""
        if isinstance(raw, str):
            prompt = self._render({"text": raw, "id": None}, raw, where) if self._template else raw
            return WorkItem(item_id(raw), prompt)
        if isinstance(raw, dict):
            if self._template is not None:
                prompt = self._render(raw, raw, where)
            elif "text" in raw:
                prompt = raw["text"]
                if not isinstance(prompt, str):
                    raise FlexInputError(f"{where}: field 'text' must be a string, got {type(prompt).__name__}")
            else:
                raise FlexInputError(
                    f"{where}: dict item has no 'text' field (keys: {sorted(raw)[:10]}); "
                    "add 'text' or set prompt_template, e.g. '{{ item.subject }}: {{ item.body }}'"
                )
            return WorkItem(item_id(raw), prompt)
        raise FlexInputError(f"{where}: expected a string or a dict, got {type(raw).__name__}")

    def _render(self, context_item: Any, raw: Any, where: str) -> str:
        assert self._template is not None
        try:
            return self._template.render(self.context, item=context_item)
        except jinja2.UndefinedError as exc:
            raise FlexInputError(f"{where}: prompt_template refers to a missing field: {exc.message}") from exc
        except jinja2.TemplateError as exc:
            raise FlexInputError(f"{where}: prompt_template failed: {exc}") from exc


def parse_jsonl_line(line: str, lineno: int, source: str = "input_path") -> Any:
    """One JSON Lines record, or None for a blank line (a ``null`` record is returned as None too;
    ``iter_jsonl`` skips blank lines itself so that null is rejected as an item). Errors name the
    line number."""
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise FlexInputError(f"{source} line {lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from exc


def iter_jsonl(lines: Iterable[str], source: str = "input_path") -> Iterator[tuple[str, Any]]:
    """Yield ``(where, record)`` for each non-blank line; memory stays flat however long the file."""
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            yield f"{source} line {lineno}", parse_jsonl_line(line, lineno, source)


def iter_list(items: Iterable[Any], source: str = "items") -> Iterator[tuple[str, Any]]:
    for index, raw in enumerate(items):
        yield f"{source}[{index}]", raw
