from __future__ import annotations

import re

from flex_provider.engine.pricing import CostTally
from flex_provider.engine.progress import RunCounters
from flex_provider.engine.usage import Usage


def test_persisted_holds_only_request_counters():
    counters = RunCounters(requests=10, unavailable=3, rate_limited=2, transient_errors=1, fallbacks=4, succeeded=9)
    counters.background_created = 5
    counters.background_reattached = 6
    assert counters.persisted() == {
        "requests": 10,
        "unavailable": 3,
        "rate_limited": 2,
        "transient_errors": 1,
        "malformed": 0,
        "fallbacks": 4,
        "background_created": 5,
        "background_reattached": 6,
    }


def test_line_reports_counts_tokens_and_money():
    counters = RunCounters(succeeded=7, failed=2, resumed=1, in_flight=3, requests=15, unavailable=4)
    counters.usage = Usage(input=1234, output=56)
    counters.cost = CostTally(actual=0.5, standard_equivalent=1.25)
    line = counters.line(total=20)
    assert line.startswith("flex progress: done 9/20 (succeeded 7, failed 2, resumed 1), in flight 3, requests 15, ")
    assert "unavailable(429) 4, rate-limited(429) 0, transient errors 0, fallbacks 0" in line
    assert "tokens in 1,234 out 56" in line
    assert "cost $0.5000 vs $1.2500 standard, saved $0.7500 by flex" in line
    assert re.search(r"elapsed \d+s$", line)


def test_line_is_one_line_with_thousands_separators_and_says_errors_are_transient():
    counters = RunCounters(succeeded=12345, requests=23456, unavailable=1500, transient_errors=2)
    line = counters.line(total=20000)
    assert "\n" not in line
    assert line.startswith("flex progress: done 12,345/20,000 (succeeded 12,345, failed 0, resumed 0)")
    assert "requests 23,456, unavailable(429) 1,500, " in line and "transient errors 2, " in line
    assert "429 unavailable" not in line and ", errors " not in line


def test_line_without_total():
    assert "done 0 (succeeded 0" in RunCounters().line(total=None)


def test_counters_have_independent_usage():
    first, second = RunCounters(), RunCounters()
    first.usage.add(Usage(input=5))
    assert second.usage == Usage()
