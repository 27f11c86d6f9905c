"""Fixtures for the engine unit tests (see ``helpers.py`` for the openai exception factories)."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from .helpers import make_api_error, make_connection_error, make_timeout_error


@pytest.fixture
def api_error() -> Callable[..., openai.APIStatusError]:
    return make_api_error


@pytest.fixture
def connection_error() -> Callable[[], openai.APIConnectionError]:
    return make_connection_error


@pytest.fixture
def timeout_error() -> Callable[[], openai.APITimeoutError]:
    return make_timeout_error
