from __future__ import annotations

import re

import pytest

from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.items import (
    PromptBuilder,
    WorkItem,
    item_id,
    iter_jsonl,
    iter_list,
    iter_work_items,
    parse_jsonl_line,
    stable_id,
)

# -- ids --------------------------------------------------------------------------------------


def test_stable_id_is_deterministic_and_content_based():
    assert stable_id("hello") == stable_id("hello")
    assert stable_id("hello") != stable_id("hello ")
    assert re.fullmatch(r"item-[0-9a-f]{20}", stable_id("hello"))


def test_stable_id_known_value():
    # sha256("hello")[:20]; pinned so ids stay the same across releases (re-runs skip done items).
    assert stable_id("hello") == "item-2cf24dba5fb0a30e26e8"


def test_stable_id_of_dict_ignores_key_order():
    assert stable_id({"a": 1, "b": "é"}) == stable_id({"b": "é", "a": 1})
    assert stable_id({"a": 1}) != stable_id({"a": 2})


def test_item_id_uses_dict_id_field():
    assert item_id({"id": "ticket-42", "text": "x"}) == "ticket-42"
    assert item_id({"id": 7, "text": "x"}) == "7"
    assert item_id({"id": 0, "text": "x"}) == "0"


def test_item_id_falls_back_to_hash_for_missing_or_empty_id():
    assert item_id({"id": "", "text": "x"}) == stable_id({"id": "", "text": "x"})
    assert item_id({"id": None, "text": "x"}) == stable_id({"id": None, "text": "x"})
    assert item_id({"text": "x"}) == stable_id({"text": "x"})
    assert item_id("plain") == stable_id("plain")


# -- PromptBuilder ----------------------------------------------------------------------------


def test_string_item_is_its_own_prompt():
    assert PromptBuilder().build("Summarise this.", "items[0]") == WorkItem(
        stable_id("Summarise this."), "Summarise this."
    )


def test_dict_item_uses_text_field_and_id():
    item = PromptBuilder().build({"id": "a1", "text": "Classify: spam?"}, "items[0]")
    assert item == WorkItem("a1", "Classify: spam?")


def test_dict_item_without_text_or_template():
    with pytest.raises(FlexInputError) as info:
        PromptBuilder().build({"subject": "s", "body": "b"}, "items[4]")
    message = str(info.value)
    assert message.startswith("items[4]: dict item has no 'text' field (keys: ['body', 'subject'])")
    assert "prompt_template" in message


def test_dict_item_text_must_be_string():
    with pytest.raises(FlexInputError, match=r"^items\[1\]: field 'text' must be a string, got int"):
        PromptBuilder().build({"text": 5}, "items[1]")


@pytest.mark.parametrize(("raw", "type_name"), [(42, "int"), (None, "NoneType"), (["a"], "list"), (1.5, "float")])
def test_other_item_types_rejected(raw, type_name):
    with pytest.raises(FlexInputError, match=rf"^input_path line 3: expected a string or a dict, got {type_name}$"):
        PromptBuilder().build(raw, "input_path line 3")


def test_template_renders_item_fields_and_context():
    builder = PromptBuilder(
        "[{{ ds }}] {{ params.lang }}: {{ item.subject }} / {{ item.body }}",
        context={"ds": "2025-01-02", "params": {"lang": "fr"}},
    )
    item = builder.build({"id": 9, "subject": "Hi", "body": "Hello there"}, "items[0]")
    assert item == WorkItem("9", "[2025-01-02] fr: Hi / Hello there")


def test_template_on_string_item_exposes_text():
    item = PromptBuilder("Q: {{ item.text }}").build("why?", "items[0]")
    assert item.prompt == "Q: why?"
    assert item.id == stable_id("why?")  # the id is of the raw item, not of the prompt


def test_template_does_not_autoescape():
    assert PromptBuilder("{{ item.text }}").build("<b>&</b>", "items[0]").prompt == "<b>&</b>"


def test_template_context_is_copied():
    context = {"ds": "2025-01-01"}
    builder = PromptBuilder("{{ ds }}", context=context)
    context["ds"] = "changed"
    assert builder.build("x", "items[0]").prompt == "2025-01-01"


def test_template_missing_field_names_field_and_position():
    builder = PromptBuilder("{{ item.subject }}: {{ item.body }}")
    with pytest.raises(FlexInputError) as info:
        builder.build({"subject": "s"}, "items[3]")
    message = str(info.value)
    assert message.startswith("items[3]: prompt_template refers to a missing field:")
    assert "'body'" in message


def test_template_missing_context_variable():
    with pytest.raises(FlexInputError, match=r"^input_path line 2: prompt_template refers to a missing field: .*'ds'"):
        PromptBuilder("{{ ds }}").build("x", "input_path line 2")


def test_template_runtime_error_is_reported():
    with pytest.raises(FlexInputError, match=r"^items\[0\]: prompt_template failed: boom"):
        PromptBuilder("{{ raise_it() }}", context={"raise_it": _raise_template_error}).build("x", "items[0]")


def _raise_template_error():
    import jinja2

    raise jinja2.TemplateRuntimeError("boom")


def test_template_is_sandboxed():
    with pytest.raises(FlexInputError, match=r"^items\[0\]: "):
        PromptBuilder("{{ item.__class__.__mro__ }}").build({"a": 1}, "items[0]")


def test_template_syntax_error():
    with pytest.raises(FlexInputError, match=r"^prompt_template: invalid Jinja syntax at line 2: "):
        PromptBuilder("ok\n{{ item.subject ")


def test_template_must_be_a_string():
    with pytest.raises(FlexInputError, match=r"^prompt_template: expected a Jinja string, got dict"):
        PromptBuilder({"not": "a template"})  # type: ignore[arg-type]


# -- JSON Lines -----------------------------------------------------------------------------


def test_iter_jsonl_skips_blank_lines_and_counts_them():
    lines = ['"first"\n', "\n", "   \n", '{"id": "x", "text": "t"}\n']
    assert list(iter_jsonl(lines)) == [
        ("input_path line 1", "first"),
        ("input_path line 4", {"id": "x", "text": "t"}),
    ]


def test_iter_jsonl_bad_line_names_the_line_number():
    lines = ['"ok"\n', '{"text": "fine"}\n', '{"text": broken}\n']
    iterator = iter_jsonl(lines, source="items")
    assert next(iterator)[0] == "items line 1"
    assert next(iterator)[0] == "items line 2"
    with pytest.raises(FlexInputError, match=r"^items line 3: not valid JSON \(Expecting value at column 10\)"):
        next(iterator)


def test_parse_jsonl_line():
    assert parse_jsonl_line("  \t\n", 5) is None
    assert parse_jsonl_line('{"a": [1, 2]}\n', 5) == {"a": [1, 2]}
    with pytest.raises(FlexInputError, match=r"^input_path line 5: "):
        parse_jsonl_line("{", 5)


def test_iter_jsonl_null_record_is_not_silently_dropped():
    assert list(iter_jsonl(['"a"\n', "null\n"])) == [("input_path line 1", "a"), ("input_path line 2", None)]


def test_iter_list_names_positions():
    assert list(iter_list(["a", {"text": "b"}])) == [("items[0]", "a"), ("items[1]", {"text": "b"})]
    assert list(iter_list(["a"], source="input")) == [("input[0]", "a")]


# -- unsendable text: unpaired surrogates ----------------------------------------------------

_UNSENDABLE = "which cannot be sent as UTF-8; fix or drop that character"


@pytest.mark.parametrize(
    ("raw", "template", "pattern"),
    [
        ("hi \ud83d there", None, r"^items\[7\]: the text holds an unpaired surrogate \(\\ud83d at character 3\)"),
        ({"text": "abc\udc00"}, None, r"^items\[7\]: field 'text' holds an unpaired surrogate \(\\udc00 at character 3\)"),
        ({"id": "a\ud83d", "text": "ok"}, None, r"^items\[7\]: field 'id' holds an unpaired surrogate \(\\ud83d at character 1\)"),
        ({"id": "a", "text": "ok", "meta": {"tags": ["x", "\ud800"]}}, None, r"^items\[7\]: field 'meta\.tags\[1\]' holds"),
        ({"text": "ok", "k\ud83d": 1}, None, r"^items\[7\]: a field name holds an unpaired surrogate"),
        ({"subject": "s\ud83d"}, "{{ item.subject }}", r"^items\[7\]: field 'subject' holds"),
    ],
)
def test_unpaired_surrogates_are_rejected_naming_item_and_field(raw, template, pattern):
    with pytest.raises(FlexInputError, match=pattern) as info:
        PromptBuilder(template).build(raw, "items[7]")
    assert _UNSENDABLE in str(info.value)


def test_surrogate_produced_by_the_template_is_rejected():
    builder = PromptBuilder("{{ item.text }} {{ params.x }}", context={"params": {"x": "\ud83d"}})
    with pytest.raises(FlexInputError, match=r"^input_path line 4: the prompt rendered from prompt_template holds an unpaired surrogate \(\\ud83d at character 3\)"):
        builder.build({"text": "ok"}, "input_path line 4")


def test_paired_surrogates_and_control_characters_are_fine():
    assert PromptBuilder().build("smile \U0001f600 \x00\x1f", "items[0]").prompt == "smile \U0001f600 \x00\x1f"


@pytest.mark.parametrize("bad_id", [1.5, True, ["a"], {"a": 1}, float("nan")])
def test_explicit_id_must_be_string_or_integer(bad_id):
    with pytest.raises(FlexInputError, match=r"^items\[2\]: field 'id' must be a string or an integer, got "):
        PromptBuilder().build({"id": bad_id, "text": "x"}, "items[2]")


def test_dict_item_that_is_not_json_like_is_an_input_error():
    with pytest.raises(FlexInputError, match=r"^items\[0\]: not JSON-like"):
        PromptBuilder().build({(1, 2): "tuple key", "text": "x"}, "items[0]")
    with pytest.raises(FlexInputError, match=r"^items\[0\]: not JSON-like"):
        PromptBuilder().build({1: "int and str keys", "text": "x"}, "items[0]")


def test_template_errors_of_any_kind_are_input_errors():
    with pytest.raises(FlexInputError, match=r"^items\[0\]: prompt_template failed: "):
        PromptBuilder("{{ item.a + item.b }}").build({"a": 1, "b": "x"}, "items[0]")
    with pytest.raises(FlexInputError, match=r"^items\[0\]: prompt_template failed: "):
        PromptBuilder("{{ item.a // 0 }}").build({"a": 1}, "items[0]")


def test_no_text_field_message_survives_non_string_keys():
    with pytest.raises(FlexInputError, match=r"^items\[0\]: dict item has no 'text' field \(keys: \['1', '2'\]\)"):
        PromptBuilder().build({2: "y", 1: "x"}, "items[0]")


# -- ids: duplicates ----------------------------------------------------------------------------


def _ids(raws, source="items"):
    return [item.id for item in iter_work_items(enumerate(raws), PromptBuilder(), lambda i: f"{source}[{i}]")]


def test_repeated_items_without_ids_get_distinct_deterministic_ids():
    ids = _ids(["a", "b", "a", {"text": "a"}, "a", {"text": "a"}])
    h, d = stable_id("a"), stable_id({"text": "a"})
    assert ids == [h, stable_id("b"), f"{h}-2", d, f"{h}-3", f"{d}-2"]
    assert ids == _ids(["a", "b", "a", {"text": "a"}, "a", {"text": "a"}])  # the same on every run


def test_duplicate_explicit_ids_name_the_id_and_both_positions():
    raws = [{"id": f"t{i}", "text": str(i)} for i in range(10)]
    raws[9]["id"] = "t2"
    with pytest.raises(FlexInputError, match=r"^items\[2\] and items\[9\] both have id 't2'"):
        _ids(raws)


def test_integer_and_string_ids_that_print_the_same_are_duplicates():
    with pytest.raises(FlexInputError, match=r"^items\[0\] and items\[1\] both have id '7'"):
        _ids([{"id": 7, "text": "a"}, {"id": "7", "text": "b"}])


def test_explicit_id_colliding_with_a_generated_id_is_an_error():
    h = stable_id("a")
    with pytest.raises(FlexInputError, match=rf"^items\[1\] and items\[2\] both have id '{h}-2'"):
        _ids(["a", "a", {"id": f"{h}-2", "text": "x"}])
    with pytest.raises(FlexInputError, match=rf"^items\[0\] and items\[2\] both have id '{h}-2'"):
        _ids([{"id": f"{h}-2", "text": "x"}, "a", "a"])
    with pytest.raises(FlexInputError, match=rf"^items\[0\] and items\[1\] both have id '{h}'"):
        _ids([{"id": h, "text": "x"}, "a"])
    with pytest.raises(FlexInputError, match=rf"^items\[0\] and items\[1\] both have id '{h}'"):
        _ids(["a", {"id": h, "text": "x"}])


# -- JSON Lines as bytes ------------------------------------------------------------------------


def test_iter_jsonl_reads_bytes_and_names_a_line_that_is_not_utf8():
    lines = [b'"ok"\n', b'{"text": "caf\xc3\xa9"}\n', b'{"text": "a\xffb"}\n']
    iterator = iter_jsonl(lines)
    assert next(iterator) == ("input_path line 1", "ok")
    assert next(iterator) == ("input_path line 2", {"text": "café"})
    with pytest.raises(FlexInputError, match=r"^input_path line 3: not valid UTF-8 \(byte 0xff at position 11\)"):
        next(iterator)


def test_iter_jsonl_accepts_a_byte_order_mark_on_the_first_line():
    assert list(iter_jsonl([b'\xef\xbb\xbf"a"\n', b'"b"\n'])) == [("input_path line 1", "a"), ("input_path line 2", "b")]


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("[" * 100000, r"^input_path line 5: not valid JSON \(nested too deeply\)"),
        ("1" * 5000, r"^input_path line 5: not valid JSON"),
    ],
)
def test_parse_jsonl_line_other_decoder_failures_are_input_errors(line, pattern):
    with pytest.raises(FlexInputError, match=pattern):
        parse_jsonl_line(line, 5)


def test_json_escaped_surrogate_in_a_line_is_rejected_naming_the_line():
    (where, raw), = iter_jsonl([b'{"text": "x\\ud83d"}\n'])
    with pytest.raises(FlexInputError, match=r"^input_path line 1: field 'text' holds an unpaired surrogate"):
        PromptBuilder().build(raw, where)
