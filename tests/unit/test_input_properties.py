"""Property tests of input validation: whatever the items or the JSON Lines bytes, validation either
accepts them (every position with an id of its own) or raises a ``FlexInputError`` naming the item
(``items[i]`` or ``input_path line n``), never any other exception.

Validation here is what runs before deferral: ``FlexJob.validate_input`` and the operator's
``build_job`` (which adds the XCom-size check and staging of large lists). The engine-level part
(random items through the engine against the emulator) lives elsewhere.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from flex_provider.engine.config import RequestSpec, RunOptions
from flex_provider.engine.errors import FlexInputError
from flex_provider.job import FlexJob
from tests.fakes import FakeTI

_TMP = Path(tempfile.mkdtemp(prefix="flex-props-"))
# No .hypothesis folder in the working tree (example database, constants cache): failures print
# their example anyway.
set_hypothesis_home_dir(_TMP / "hypothesis")
SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------------

# Small pools on purpose, so that repeats (duplicate items, duplicate ids) are common.
_PIECES = st.sampled_from(
    ["\ud83d", "\udfff", "\U0001f600", "\x00", "\x1b", "\n", "{{", "}}", "é", "a", "b", "1", " ", "\u2028"]
)
texts = st.one_of(
    st.sampled_from(["a", "b", ""]), st.lists(st.one_of(_PIECES, st.text(max_size=3)), max_size=5).map("".join)
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.integers(), st.floats(), texts)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=6
)
ids = st.one_of(
    st.sampled_from(["a", "b", "1", "", "item-0123456789abcdef0123", "item-0123456789abcdef0123-2"]),
    st.integers(0, 2),
    st.none(),
    st.floats(),
    st.booleans(),
    st.lists(st.integers(0, 1), max_size=2),
    texts,
)
keys = st.one_of(st.sampled_from(["id", "text", "subject", "a", "b"]), texts, st.integers(0, 2))


@st.composite
def dict_items(draw: Any, key_strategy: Any = keys) -> dict:
    item = draw(st.dictionaries(key_strategy, json_values, max_size=3))
    if draw(st.booleans()):
        item["id"] = draw(ids)
    if draw(st.booleans()):
        item["text"] = draw(st.one_of(texts, json_values))
    return item


odd_values = st.one_of(
    st.binary(max_size=3), st.tuples(st.integers()), st.just(object()), st.sets(st.integers(), max_size=2)
)
items_lists = st.lists(st.one_of(texts, dict_items(), json_values, odd_values), max_size=8)
templates = st.sampled_from(
    [
        None,
        "{{ item.text }}",
        "{{ item.a ~ item.b }}",
        "{{ item.a + item.b }}",
        "{{ item.a / item.b }}",
        "{{ item['id'] }}: {{ item.text | upper }}",
        "{{ item.subject }} {{ params.p }}",
    ]
)
params = st.dictionaries(st.just("p"), texts, max_size=1)

# JSON Lines: good records (ASCII-escaped, so "\ud83d" arrives as a JSON escape), junk bytes, bad JSON,
# non-objects, nulls, blank lines, a byte order mark.
json_like_items = st.one_of(
    texts, dict_items(key_strategy=st.one_of(st.sampled_from(["id", "text", "a"]), texts)), json_values
)
lines = st.one_of(
    json_like_items.map(lambda v: json.dumps(v).encode("ascii")),
    json_like_items.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.binary(max_size=8),
    st.sampled_from(
        [b"null", b"[1, 2]", b"{", b"\xff", b"   ", b"", b"\xef\xbb\xbf{}", b'{"text": "\\ud83d"}', b"1" * 5000]
    ),
)
jsonl_files = st.lists(lines, max_size=8).map(lambda ls: b"\n".join(ls))

# -- helpers -----------------------------------------------------------------------------------

_ITEM = re.compile(r"^items\[(\d+)\]")
_LINE = re.compile(r"^input_path line (\d+)")


def _check_names_item(exc: FlexInputError, pattern: re.Pattern, limit: int, start: int = 0) -> None:
    message = str(exc)
    match = pattern.match(message)
    assert match, f"error names no item: {message!r}"
    assert start <= int(match.group(1)) < limit, message
    message.encode("utf-8")  # printable: the message itself never carries an unpaired surrogate


def _job(**fields: Any) -> FlexJob:
    spec = RequestSpec(model="m", prompt_template=fields.pop("prompt_template", None))
    return FlexJob(conn_id="c", spec=spec, options=RunOptions(), work_uri=f"file://{_TMP}/work", **fields)


# -- properties ----------------------------------------------------------------------------------


@SETTINGS
@given(items=items_lists, template=templates, extra=params)
def test_item_lists_validate_or_fail_naming_the_item(items: list, template: str | None, extra: dict) -> None:
    job = _job(items=items, prompt_template=template, template_context={"params": extra})
    try:
        total = job.validate_input()
    except FlexInputError as exc:
        _check_names_item(exc, _ITEM, len(items))
        return
    assert total == len(items)
    work = list(job.iter_items())
    assert len({w.id for w in work}) == len(items)  # every position has a record of its own
    assert [w.id for w in work] == [w.id for w in job.iter_items()]  # and the same ids every time
    for w in work:
        w.prompt.encode("utf-8")
        w.id.encode("utf-8")


@SETTINGS
@given(data=jsonl_files, template=templates)
def test_jsonl_bytes_validate_or_fail_naming_the_line(data: bytes, template: str | None) -> None:
    with tempfile.NamedTemporaryFile(dir=_TMP, suffix=".jsonl", delete=False) as handle:
        handle.write(data)
    try:
        job = _job(input_uri=f"file://{handle.name}", input_label="input_path", prompt_template=template)
        try:
            total = job.validate_input()
        except FlexInputError as exc:
            _check_names_item(exc, _LINE, data.count(b"\n") + 2, start=1)
            return
        work = list(job.iter_items())
        assert len(work) == total and len({w.id for w in work}) == total
    finally:
        Path(handle.name).unlink()


@SETTINGS
@given(items=st.lists(st.one_of(texts, dict_items(key_strategy=texts)), max_size=8))
def test_staged_items_get_the_same_ids_as_the_list(items: list) -> None:
    """Large lists are staged to JSON Lines before deferral: the engine must see the same ids."""
    job = _job(items=items)
    try:
        job.validate_input()
    except FlexInputError:
        return
    path = _TMP / "staged.jsonl"
    path.write_text("".join(json.dumps(raw, ensure_ascii=False, default=str) + "\n" for raw in items), encoding="utf-8")
    staged = _job(input_uri=f"file://{path}", input_label="items")
    assert [w.id for w in staged.iter_items()] == [w.id for w in job.iter_items()]


def _context() -> dict:
    ti = FakeTI(dag_id="d", run_id="manual__props", task_id="t", map_index=-1)
    return {"ti": ti, "ds": "2026-01-01", "run_id": ti.run_id, "params": {}}


@SETTINGS
@given(items=items_lists, template=templates, xcom_max_bytes=st.sampled_from([1, 600, 1024 * 1024]))
def test_build_job_raises_only_input_errors_naming_the_item(
    items: list, template: str | None, xcom_max_bytes: int
) -> None:
    from flex_provider.operators.flex import FlexLLMOperator

    try:
        operator = FlexLLMOperator(
            task_id="t", model="m", items=items, prompt_template=template, xcom_max_bytes=xcom_max_bytes
        )
        job = operator.build_job(_context())
    except FlexInputError as exc:
        message = str(exc)
        if message.startswith("items: "):  # the up-front XCom check names the whole input
            assert "set output_path" in message
            return
        _check_names_item(exc, _ITEM, len(items))
        return
    assert job.total == len(items)


odd = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    texts,
    st.binary(max_size=3),
    st.lists(scalars, max_size=2),
    st.dictionaries(texts, scalars, max_size=2),
    st.sampled_from(["nosuch://bucket/x", "file:///", "/dev/null", "", "  ", "{{ ds }}"]),
)
_FIELD = re.compile(r"^(model|instructions|input|items|input_path|output_path|request_options[.\w]*|response_format)\b")


@SETTINGS
@given(
    source=st.sampled_from(["input", "items", "input_path"]),
    value=odd,
    model=st.one_of(st.just("gpt-5-mini"), odd),
    instructions=st.one_of(st.none(), odd),
    request_options=st.one_of(
        st.none(), odd, st.dictionaries(st.sampled_from(["extra_body", "text", "top_p"]), odd, max_size=2)
    ),
    output_path=st.one_of(st.none(), odd),
)
def test_odd_templated_values_give_only_input_errors(
    source: str, value: Any, model: Any, instructions: Any, request_options: Any, output_path: Any
) -> None:
    """Whatever the templated fields render to, build_job raises FlexInputError naming the field."""
    from flex_provider.operators.flex import FlexLLMOperator

    if value is None:
        return
    try:
        operator = FlexLLMOperator(task_id="t", model="m", **{source: value})
        operator.model, operator.instructions = model, instructions
        operator.request_options, operator.output_path = request_options, output_path  # as if rendered
        operator.build_job(_context())
    except FlexInputError as exc:
        message = str(exc)
        assert _FIELD.match(message) or _ITEM.match(message), message
        message.encode("utf-8")
