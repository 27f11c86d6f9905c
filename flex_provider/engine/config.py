"""Plain, JSON-serialisable settings of a run.

The operator validates user input into these objects before deferring; the trigger carries them
as dicts (``to_dict``/``from_dict``) and rebuilds them in the triggerer. Nothing here is secret.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jsonschema

from flex_provider.engine.errors import FlexInputError
from flex_provider.engine.items import surrogate_problem

API_CHOICES = ("responses", "chat")
ON_UNAVAILABLE_CHOICES = ("retry", "fallback", "fail")
ON_BUDGET_EXHAUSTED_CHOICES = ("fail", "succeed")
SUBMIT_MODES = ("inline", "background")
REDO_FAILED_CHOICES = ("retryable", "all")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority")


def require_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise FlexInputError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")


def require_positive(name: str, value: Any, *, allow_zero: bool = False, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FlexInputError(f"{name}: expected a number, got {value!r}")
    if not math.isfinite(value):  # nan passes every comparison below; inf would wait forever
        raise FlexInputError(f"{name}: expected a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise FlexInputError(f"{name}: expected a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")


def _positive_int_or_none(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FlexInputError(f"{name}: expected a positive integer or None, got {value!r}")


_PRICE_KEYS = {"input", "cached_input", "output"}


def check_prices(prices: Any, field: str = "prices") -> None:
    """A price table as the operator and the site-wide Variable take it; ``field`` names where it came from."""
    if prices is None:
        return
    if not isinstance(prices, dict):
        raise FlexInputError(f"{field}: expected a dict of model -> price dict, got {type(prices).__name__}")
    for model, price in prices.items():
        if hasattr(price, "cached_input"):  # a pricing.Price
            continue
        if not isinstance(price, dict) or set(price) != _PRICE_KEYS:
            raise FlexInputError(
                f"{field}[{model!r}]: expected a dict with keys {sorted(_PRICE_KEYS)} (USD per 1M tokens), got {price!r}"
            )
        for key, value in price.items():
            require_positive(f"{field}[{model!r}].{key}", value, allow_zero=True)


@dataclass(frozen=True)
class RetryPolicy:
    """The per-item retry budget. Defaults suit flex: capacity shortages last minutes, not seconds,
    so backoff grows to 5 minutes and an item may keep trying for an hour before giving up."""

    max_attempts: int = 12
    max_elapsed_s: float = 3600.0
    initial_wait_s: float = 2.0
    max_wait_s: float = 300.0
    jitter_s: float = 2.0
    # Ceiling on a server-sent Retry-After we are willing to honour (longer values are capped).
    max_retry_after_s: float = 900.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise FlexInputError(f"retry.max_attempts: expected an integer >= 1, got {self.max_attempts!r}")
        require_positive("retry.max_elapsed_s", self.max_elapsed_s)
        require_positive("retry.initial_wait_s", self.initial_wait_s, allow_zero=True)
        require_positive("retry.max_wait_s", self.max_wait_s, allow_zero=True)
        require_positive("retry.jitter_s", self.jitter_s, allow_zero=True)
        require_positive("retry.max_retry_after_s", self.max_retry_after_s, allow_zero=True)

    @classmethod
    def from_value(cls, value: RetryPolicy | dict[str, Any] | None) -> RetryPolicy:
        if value is None:
            return cls()
        if isinstance(value, RetryPolicy):
            return value
        if not isinstance(value, dict):
            raise FlexInputError(f"retry: expected a dict or RetryPolicy, got {type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise FlexInputError(f"retry: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**value)


# Set by the operator's own parameters: request_options may not override them, not even through the
# SDK's extra_body/extra_query escape hatches (which are merged into the request as sent).
RESERVED_REQUEST_KEYS = frozenset(
    {"model", "input", "instructions", "messages", "service_tier", "background", "stream"}
)
# Headers that would replace the connection's credentials or billing account (compared lower-cased).
RESERVED_HEADERS = frozenset({"authorization", "openai-organization", "openai-project"})


def _check_sendable(name: str, value: str) -> None:
    problem = surrogate_problem(value)
    if problem:
        raise FlexInputError(f"{name}: {problem}")


def _check_request_options(options: Any, *, structured: bool) -> None:
    """Refuse what would override the operator's own parameters or the connection's credentials."""
    if not isinstance(options, dict):
        raise FlexInputError(f"request_options: expected a dict, got {type(options).__name__}")
    clash = RESERVED_REQUEST_KEYS & set(options)
    if clash:
        raise FlexInputError(
            f"request_options: {sorted(clash)} are set by the operator's own parameters; use those instead"
        )
    hatches = {}
    for hatch in ("extra_body", "extra_query", "extra_headers"):
        value = options.get(hatch)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise FlexInputError(f"request_options.{hatch}: expected a dict, got {type(value).__name__}")
        hatches[hatch] = value
    for hatch in ("extra_body", "extra_query"):
        bad = sorted(k for k in hatches.get(hatch, {}) if k in RESERVED_REQUEST_KEYS)
        if bad:
            names = ", ".join(f"request_options.{hatch}.{k}" for k in bad)
            raise FlexInputError(
                f"{names}: set by the operator's own parameters (model, instructions, input, service_tier, "
                "submit_mode); use those instead"
            )
    bad = sorted(str(k) for k in hatches.get("extra_headers", {}) if str(k).lower() in RESERVED_HEADERS)
    if bad:
        names = ", ".join(f"request_options.extra_headers.{k}" for k in bad)
        raise FlexInputError(
            f"{names}: credentials, organization and project come from the Airflow connection "
            "(password, extras organization/project), not from request headers"
        )
    if structured:
        clashes = []
        for prefix, source in (("request_options", options), ("request_options.extra_body", hatches.get("extra_body"))):
            if not source:
                continue
            if "response_format" in source:
                clashes.append(f"{prefix}.response_format")
            text = source.get("text")
            if isinstance(text, dict) and "format" in text:
                clashes.append(f"{prefix}.text.format")
        if clashes:
            raise FlexInputError(
                f"{', '.join(clashes)}: clashes with response_format, which sets the output format itself; "
                "drop one of them"
            )
    try:
        blob = json.dumps(options, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise FlexInputError(f"request_options: not JSON-serialisable ({exc})") from exc
    problem = surrogate_problem(blob)
    if problem:
        raise FlexInputError(f"request_options: {problem.split(' (')[0]} in one of its strings; fix or drop it")


@dataclass(frozen=True)
class RequestSpec:
    """What every request of the run looks like, apart from the item's own data.

    ``prompt_template`` turns an item into its prompt (Jinja, rendered per item), so it belongs to
    the request: two runs whose specs agree (tier and timeout aside) ask the same question, which
    is what :meth:`fingerprint` captures."""

    model: str
    instructions: str | None = None
    api: Literal["responses", "chat"] = "responses"
    response_schema: dict[str, Any] | None = None  # JSON schema; output becomes the parsed object
    schema_name: str = "result"
    request_options: dict[str, Any] = field(default_factory=dict)
    service_tier: str = "flex"
    timeout: float = 900.0
    prompt_template: str | None = None  # None: a dict item's "text" field, or a string item itself
    # Sent as ``prompt_cache_key`` so that requests sharing the instructions land on the same prompt
    # cache: "auto" derives it from the fingerprint (same question, same key, night after night),
    # None sends none. It does not change answers, so it is not part of the fingerprint.
    prompt_cache_key: str | None = "auto"

    def __post_init__(self) -> None:
        if self.prompt_template is not None and not isinstance(self.prompt_template, str):
            raise FlexInputError(f"prompt_template: expected a Jinja string, got {type(self.prompt_template).__name__}")
        if not isinstance(self.model, str) or not self.model.strip():
            raise FlexInputError(f"model: expected a non-empty model name, got {self.model!r}")
        if self.instructions is not None and not isinstance(self.instructions, str):
            raise FlexInputError(f"instructions: expected a string, got {type(self.instructions).__name__}")
        require_choice("api", self.api, API_CHOICES)
        require_choice("service_tier", self.service_tier, SERVICE_TIERS)
        require_positive("timeout", self.timeout)
        if self.prompt_cache_key is not None and (
            not isinstance(self.prompt_cache_key, str) or not self.prompt_cache_key
        ):
            raise FlexInputError(
                f"prompt_cache_key: expected a non-empty string, 'auto' or None, got {self.prompt_cache_key!r}"
            )
        _check_sendable("model", self.model)
        if self.instructions is not None:
            _check_sendable("instructions", self.instructions)
        _check_request_options(self.request_options, structured=self.response_schema is not None)
        if self.response_schema is not None:
            if not isinstance(self.response_schema, dict):
                raise FlexInputError("response_format: expected a Pydantic model class or a JSON schema dict")
            try:
                jsonschema.Draft202012Validator.check_schema(self.response_schema)
            except jsonschema.SchemaError as exc:
                raise FlexInputError(f"response_format: not a valid JSON schema: {exc.message}") from exc
            except Exception as exc:  # a schema odd enough to break the checker itself
                raise FlexInputError(f"response_format: not a valid JSON schema: {type(exc).__name__}: {exc}") from exc

    # Fields that shape the answers. Tier and timeout do not (an answer is an answer on any tier);
    # a field added later must be added here only if it changes answers, and then old folders are
    # (rightly) refused. The digest is the same as release 0.1's, which hashed these very fields.
    FINGERPRINT_FIELDS = (
        "model",
        "instructions",
        "api",
        "response_schema",
        "schema_name",
        "request_options",
        "prompt_template",
    )

    def fingerprint(self) -> str:
        """What makes two runs' answers interchangeable (``_job.json`` refuses to mix others)."""
        shape = {name: getattr(self, name) for name in self.FINGERPRINT_FIELDS}
        blob = json.dumps(shape, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def cache_key(self) -> str | None:
        """The ``prompt_cache_key`` to send: the user's, one derived from the fingerprint, or None."""
        if self.prompt_cache_key == "auto":
            return f"flex-{self.fingerprint()[:32]}"
        return self.prompt_cache_key


@dataclass(frozen=True)
class RunOptions:
    """How the run behaves: concurrency, retries, what to do when flex is unavailable."""

    max_concurrency: int = 32
    on_unavailable: Literal["retry", "fallback", "fail"] = "retry"
    fallback_tier: str = "default"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    submit_mode: Literal["inline", "background"] = "inline"
    poll_interval_s: float = 5.0
    flush_every: int = 100
    flush_interval_s: float = 2.0
    progress_interval_s: float = 5.0
    prices: dict[str, dict[str, float]] | None = None
    # XCom mode: stop sending once finished records add up to this many bytes of JSON (None: no cap).
    max_result_bytes: int | None = None
    # Which failed items a later run (task retry, clear) sends again: only those whose failure was
    # retryable, or every one (after the cause of a non-retryable failure was fixed). Successes are kept.
    redo_failed: Literal["retryable", "all"] = "retryable"
    # Pacing (engine/ratelimit.py): the account's limits are learnt from the answers' headers; these
    # caps bound the run further (for tasks sharing an account). "Per minute" means per
    # ``rate_limit_window_s`` (60 s; tests against the emulator use its shorter window).
    max_requests_per_minute: float | None = None
    max_tokens_per_minute: float | None = None
    rate_limit_window_s: float = 60.0
    # Spending cap in USD (engine/budget.py), what earlier sessions in the same folder spent included.
    max_cost_usd: float | None = None
    # Finish-by time (engine/deadline.py): ISO 8601 with a timezone, absolute, resolved by the operator
    # before deferral, so that a restarted trigger keeps the same deadline. None: no deadline.
    deadline_at: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "retry", RetryPolicy.from_value(self.retry))  # accept a plain dict
        if (
            isinstance(self.max_concurrency, bool)
            or not isinstance(self.max_concurrency, int)
            or self.max_concurrency < 1
        ):
            raise FlexInputError(f"max_concurrency: expected an integer >= 1, got {self.max_concurrency!r}")
        check_prices(self.prices)
        require_choice("on_unavailable", self.on_unavailable, ON_UNAVAILABLE_CHOICES)
        require_choice("fallback_tier", self.fallback_tier, SERVICE_TIERS)
        require_choice("submit_mode", self.submit_mode, SUBMIT_MODES)
        if self.redo_failed not in REDO_FAILED_CHOICES:
            raise FlexInputError(
                f"redo_failed: expected 'retryable' (a retry or clear sends again only items whose failure "
                f"was retryable) or 'all' (every failed item is sent again), got {self.redo_failed!r}"
            )
        require_positive("poll_interval_s", self.poll_interval_s)
        require_positive("flush_interval_s", self.flush_interval_s)
        require_positive("progress_interval_s", self.progress_interval_s)
        if isinstance(self.flush_every, bool) or not isinstance(self.flush_every, int) or self.flush_every < 1:
            raise FlexInputError(f"flush_every: expected an integer >= 1, got {self.flush_every!r}")
        _positive_int_or_none("max_result_bytes", self.max_result_bytes)
        require_positive("max_requests_per_minute", self.max_requests_per_minute, allow_none=True)
        require_positive("max_tokens_per_minute", self.max_tokens_per_minute, allow_none=True)
        require_positive("rate_limit_window_s", self.rate_limit_window_s)
        require_positive("max_cost_usd", self.max_cost_usd, allow_zero=True, allow_none=True)
        if self.deadline_at is not None:
            parse_deadline_at(self.deadline_at)

    @property
    def deadline(self) -> datetime | None:
        """``deadline_at`` as an aware datetime (None: no deadline)."""
        return parse_deadline_at(self.deadline_at) if self.deadline_at is not None else None


def parse_deadline_at(value: Any) -> datetime:
    """An absolute deadline as carried in a job: ISO 8601 text with a timezone."""
    if not isinstance(value, str):
        raise FlexInputError(f"deadline_at: expected an ISO 8601 date-time string, got {type(value).__name__}")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise FlexInputError(f"deadline_at: not an ISO 8601 date-time: {value!r}") from None
    if moment.tzinfo is None:
        raise FlexInputError(f"deadline_at: {value!r} has no timezone; expected an absolute time such as ...+00:00")
    return moment


def budget_from(value: Any) -> float | None:
    """``max_cost_usd`` as the operator takes it (rendered by Jinja: a number or its text)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise FlexInputError(f"max_cost_usd: expected a number of US dollars, got {value!r}") from None
    require_positive("max_cost_usd", value, allow_zero=True)
    return float(value)


def deadline_from(value: Any, started: datetime) -> str | None:
    """``deadline`` as the operator takes it, made absolute: ISO 8601 with a timezone (what the job
    carries, so that a restarted trigger keeps the same deadline).

    An absolute time: a datetime, or its ISO text (what Jinja renders ``{{ data_interval_end +
    macros.timedelta(hours=6) }}`` to); without a timezone it is UTC (Airflow's own default). A
    duration from ``started`` (the task's start): a timedelta, or seconds as a number or its text."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                raise FlexInputError(
                    f"deadline: expected a date-time (ISO 8601, e.g. '2026-01-01T06:00:00+00:00'), a duration in "
                    f"seconds or a timedelta, got {value!r}"
                ) from None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        require_positive("deadline", value)
        moment = started + timedelta(seconds=float(value))
    else:
        raise FlexInputError(
            f"deadline: expected a date-time, a duration in seconds or a timedelta, got {type(value).__name__}"
        )
    return moment.astimezone(UTC).isoformat()


def to_dict(obj: RequestSpec | RunOptions) -> dict[str, Any]:
    return asdict(obj)


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys ``cls`` knows: a payload written by another release of the provider (a trigger in
    flight across an upgrade or a downgrade) may carry keys this one does not have; missing ones
    take their defaults."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def request_spec_from_dict(data: dict[str, Any]) -> RequestSpec:
    return RequestSpec(**_known(RequestSpec, data))


def run_options_from_dict(data: dict[str, Any]) -> RunOptions:
    known = _known(RunOptions, data)
    known["retry"] = RetryPolicy.from_value(_known(RetryPolicy, known.get("retry") or {}))
    return RunOptions(**known)
