from __future__ import annotations

import random

import pytest

from flex_provider.engine.config import RequestSpec
from flex_provider.engine.estimate import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    TokenEstimate,
    TokenEstimator,
    output_bound,
)

# -- output_bound -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "options", "bound"),
    [
        ("responses", {"max_output_tokens": 300}, 300),
        ("responses", {"max_tokens": 300}, None),  # not a Responses parameter
        ("chat", {"max_completion_tokens": 200, "max_tokens": 999}, 200),  # the newer name wins
        ("chat", {"max_tokens": 150}, 150),
        ("chat", {"max_tokens": 150, "n": 3}, 450),  # every choice is bounded (and charged) separately
        ("chat", {"max_output_tokens": 300}, None),  # not a Chat parameter
        ("responses", {"max_output_tokens": 100, "extra_body": {"max_output_tokens": 700}}, 700),  # merged last
        ("responses", {}, None),
        ("responses", {"max_output_tokens": True}, None),
        ("responses", {"max_output_tokens": 0}, None),
        ("responses", {"max_output_tokens": -5}, None),
        ("responses", {"max_output_tokens": "300"}, None),
        ("chat", {"max_tokens": 100, "n": "2"}, 100),
    ],
)
def test_output_bound(api, options, bound):
    assert output_bound(api, options) == bound


def test_output_bound_without_options():
    assert output_bound("responses", None) is None


# -- one estimate ----------------------------------------------------------------------------------


def test_estimate_counts_characters_overhead_and_output_bound():
    estimator = TokenEstimator(max_output_tokens=256)
    estimate = estimator.estimate("x" * 400)
    assert estimate == TokenEstimate(
        prompt_chars=400, prompt_tokens=100 + MESSAGE_OVERHEAD_TOKENS, max_output_tokens=256, bounded=True
    )
    assert estimate.total == 100 + MESSAGE_OVERHEAD_TOKENS + 256


def test_estimate_rounds_up_and_adds_fixed_characters_and_messages():
    estimator = TokenEstimator(fixed_chars=10, messages=2, max_output_tokens=1)
    estimate = estimator.estimate("abc")  # 13 characters: 4 tokens at 4 per token, rounded up
    assert estimate.prompt_chars == 13
    assert estimate.prompt_tokens == 4 + 2 * MESSAGE_OVERHEAD_TOKENS


def test_estimate_without_output_bound_uses_the_stated_default():
    estimate = TokenEstimator().estimate("hello")
    assert estimate.max_output_tokens == DEFAULT_MAX_OUTPUT_TOKENS
    assert estimate.bounded is False
    assert TokenEstimator(default_max_output_tokens=50).estimate("hello").max_output_tokens == 50


def test_charged_is_the_measured_prompt_plus_the_output_bound():
    estimate = TokenEstimator(max_output_tokens=300).estimate("x" * 4000)
    assert estimate.charged(1234) == 1234 + 300  # the output bound is charged whatever the answer's length
    assert estimate.charged(None) == estimate.total
    assert estimate.charged(-1) == estimate.total


def test_for_spec_reads_instructions_schema_tools_and_the_bound():
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
    spec = RequestSpec(
        model="gpt-5-mini",
        instructions="Classify the text.",
        response_schema=schema,
        request_options={"max_output_tokens": 64, "tools": tools},
    )
    estimator = TokenEstimator.for_spec(spec)
    estimate = estimator.estimate("")
    assert estimator.overhead_tokens == 2 * MESSAGE_OVERHEAD_TOKENS  # instructions + input
    assert estimate.prompt_chars > len("Classify the text.") + 60  # schema and tools are sent with every request
    assert estimate.max_output_tokens == 64 and estimate.bounded

    chat = TokenEstimator.for_spec(RequestSpec(model="gpt-5-mini", api="chat", request_options={"max_tokens": 10}))
    assert chat.overhead_tokens == MESSAGE_OVERHEAD_TOKENS
    assert chat.estimate("x" * 40).total == 10 + MESSAGE_OVERHEAD_TOKENS + 10


def test_for_spec_without_bound_takes_the_given_default():
    estimator = TokenEstimator.for_spec(RequestSpec(model="gpt-5-mini"), default_max_output_tokens=777)
    assert estimator.estimate("x").max_output_tokens == 777
    assert estimator.bounded is False


@pytest.mark.parametrize(
    "kwargs",
    [
        {"chars_per_token": 0.1},
        {"chars_per_token": 50.0},
        {"smoothing": 0.0},
        {"smoothing": 1.5},
        {"max_step": 1.0},
        {"messages": 0},
        {"fixed_chars": -1},
        {"default_max_output_tokens": -1},
    ],
)
def test_invalid_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        TokenEstimator(**kwargs)


# -- learning the ratio ------------------------------------------------------------------------------


def _measured(estimator: TokenEstimator, chars: int, true_ratio: float) -> int:
    """What the API would report as input tokens for ``chars`` characters at ``true_ratio``."""
    return round(chars / true_ratio) + estimator.overhead_tokens


@pytest.mark.parametrize("true_ratio", [1.6, 2.7, 4.0, 5.5])  # Chinese, code, English, spaced-out text
def test_ratio_converges_on_the_measured_one(true_ratio):
    estimator = TokenEstimator(max_output_tokens=10)
    rng = random.Random(3)
    for _ in range(40):
        chars = rng.randint(200, 4000)
        estimate = estimator.estimate("x" * chars)
        estimator.observe(estimate, _measured(estimator, chars, true_ratio))
    assert estimator.chars_per_token == pytest.approx(true_ratio, rel=0.03)
    estimate = estimator.estimate("x" * 10_000)
    assert estimate.prompt_tokens == pytest.approx(10_000 / true_ratio + estimator.overhead_tokens, rel=0.03)


def test_noisy_measurements_still_converge():
    estimator = TokenEstimator()
    rng = random.Random(11)
    for _ in range(400):
        chars = rng.randint(500, 3000)
        noisy = 3.0 * rng.uniform(0.8, 1.2)  # each text its own ratio around 3
        estimator.observe(estimator.estimate("x" * chars), _measured(estimator, chars, noisy))
    assert estimator.chars_per_token == pytest.approx(3.0, rel=0.06)


def test_one_step_is_bounded_and_the_ratio_stays_within_limits():
    estimator = TokenEstimator(max_step=1.5, min_chars_per_token=0.5, max_chars_per_token=12.0)
    estimate = estimator.estimate("x" * 4000)
    estimator.observe(estimate, estimator.overhead_tokens + 1)  # 4000 characters in one token: an odd answer
    assert estimator.chars_per_token == pytest.approx(6.0)  # at most x1.5 per answer, even the first
    for _ in range(50):
        estimator.observe(estimate, estimator.overhead_tokens + 1)
    assert 11.9 < estimator.chars_per_token <= 12.0  # never past the bound
    for _ in range(200):
        estimator.observe(estimate, 10**9)
    assert 0.5 <= estimator.chars_per_token < 0.51


def test_one_outlier_after_many_answers_moves_the_ratio_little():
    estimator = TokenEstimator(smoothing=0.1)
    for _ in range(50):
        estimator.observe(estimator.estimate("x" * 2000), _measured(estimator, 2000, 4.0))
    before = estimator.chars_per_token
    estimator.observe(estimator.estimate("x" * 2000), estimator.overhead_tokens + 1)  # e.g. an image-only answer
    assert estimator.chars_per_token <= before * 1.06


@pytest.mark.parametrize(
    ("chars", "input_tokens"),
    [
        (2000, None),  # no usage reported
        (10, 5),  # a prompt so short that the overhead is most of it
        (2000, MESSAGE_OVERHEAD_TOKENS),  # no more tokens than the overhead: says nothing about the text
        (2000, 0),
    ],
)
def test_answers_that_tell_little_are_skipped(chars, input_tokens):
    estimator = TokenEstimator()
    estimator.observe(estimator.estimate("x" * chars), input_tokens)
    assert estimator.chars_per_token == 4.0
    assert estimator.samples == 0
