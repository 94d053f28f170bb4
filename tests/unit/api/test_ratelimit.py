"""The per-key API rate limiter, on a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bsky_backfill.api.ratelimit import KeyRateLimiter, RateDecision
from bsky_backfill.atproto.ratelimit import RateLimitInfo
from bsky_backfill.errors import ConfigError

WALL0 = 1_800_000_000.0  # unix seconds at monotonic 0


class FakeClock:
    """Monotonic seconds that move only when told; ``wall`` is the matching unix time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL0 + self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def limiter(clock: FakeClock, rate: float = 2.0, burst: int = 5) -> KeyRateLimiter:
    return KeyRateLimiter(rate, burst, clock, wall=clock.wall)


def test_a_burst_is_allowed_then_refused_with_retry_after(clock: FakeClock) -> None:
    limits = limiter(clock, rate=2.0, burst=5)
    decisions = [limits.check("k") for _ in range(5)]
    assert [d.allowed for d in decisions] == [True] * 5
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.retry_after is None for d in decisions)
    assert decisions[-1].reset_seconds == pytest.approx(2.5)  # 5 tokens at 2/s

    refused = limits.check("k")
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after == pytest.approx(0.5)  # one token at 2/s
    assert refused.reset_seconds == pytest.approx(2.5)
    again = limits.check("k")  # a refused request takes nothing
    assert not again.allowed
    assert again.retry_after == pytest.approx(0.5)


def test_tokens_come_back_at_the_rate(clock: FakeClock) -> None:
    limits = limiter(clock, rate=2.0, burst=5)
    for _ in range(5):
        limits.check("k")
    clock.advance(0.4)
    refused = limits.check("k")
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.1)
    clock.advance(0.1)
    assert limits.check("k").allowed  # exactly one token back, despite float clocks
    assert not limits.check("k").allowed
    clock.advance(1.0)
    assert [limits.check("k").allowed for _ in range(3)] == [True, True, False]


def test_an_idle_bucket_refills_to_the_burst_and_no_further(clock: FakeClock) -> None:
    limits = limiter(clock, rate=2.0, burst=5)
    for _ in range(5):
        limits.check("k")
    clock.advance(3600)
    decisions = [limits.check("k") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]


def test_sustained_rate_is_the_rate(clock: FakeClock) -> None:
    limits = limiter(clock, rate=10.0, burst=3)
    allowed = 0
    for _ in range(10_000):  # 100 s of requests every 10 ms, ten times the rate
        allowed += limits.check("k").allowed
        clock.advance(0.01)
    assert allowed == pytest.approx(3 + 10 * 100, abs=2)


def test_keys_have_their_own_buckets(clock: FakeClock) -> None:
    limits = limiter(clock, rate=1.0, burst=2)
    assert [limits.check("a").allowed for _ in range(3)] == [True, True, False]
    assert [limits.check("b").allowed for _ in range(3)] == [True, True, False]


def test_headers_when_allowed(clock: FakeClock) -> None:
    limits = limiter(clock, rate=2.0, burst=5)
    clock.advance(10.2)
    headers = limits.check("k").headers()
    assert headers == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "4",
        # full again in 0.5 s: ABSOLUTE unix seconds, rounded up, as the reference PDS
        "RateLimit-Reset": str(math.ceil(WALL0 + 10.2 + 0.5)),
        "RateLimit-Policy": "5;w=3",  # 5 per 2.5 s, the window rounded up
    }


def test_headers_when_refused(clock: FakeClock) -> None:
    limits = limiter(clock, rate=0.5, burst=2)
    limits.check("k")
    limits.check("k")
    clock.advance(0.25)
    refused = limits.check("k")
    headers = refused.headers()
    assert headers["RateLimit-Remaining"] == "0"
    assert headers["Retry-After"] == "2"  # 1.75 s, rounded up
    assert headers["RateLimit-Reset"] == str(math.ceil(WALL0 + 4.0))
    assert headers["RateLimit-Policy"] == "2;w=4"


def test_retry_after_is_at_least_a_second() -> None:
    decision = RateDecision(
        allowed=False,
        limit=100,
        remaining=0,
        reset_seconds=0.5,
        retry_after=0.01,
        reset_at=WALL0 + 0.5,
        window_seconds=0.1,
    )
    headers = decision.headers()
    assert headers["Retry-After"] == "1"
    assert headers["RateLimit-Policy"] == "100;w=1"


def test_our_own_client_reads_the_headers_back(clock: FakeClock) -> None:
    limits = limiter(clock, rate=1.0, burst=3)
    for _ in range(3):
        limits.check("k")
    refused = limits.check("k")
    info = RateLimitInfo.from_headers(refused.headers(), now=clock.wall())
    assert (info.limit, info.remaining, info.policy_limit, info.policy_window) == (3, 0, 3, 3)
    assert info.reset_at == pytest.approx(WALL0 + 3)
    assert info.retry_delay(clock.wall()) == pytest.approx(1)


def test_full_buckets_of_idle_keys_are_forgotten(clock: FakeClock) -> None:
    limits = limiter(clock, rate=2.0, burst=4)  # refills in 2 s
    for index in range(1000):
        limits.check(f"idle{index}")
    assert len(limits) == 1000
    clock.advance(1.9)
    limits.check("busy")
    assert len(limits) == 1001  # not full yet: kept
    clock.advance(0.2)
    limits.check("busy")  # the first sweep is due
    assert len(limits) == 1  # the idle buckets were full: gone, "busy" is not
    # A forgotten key starts with a full bucket, exactly as if it had been kept.
    assert limits.check("idle0").remaining == 3


def test_a_key_in_debt_is_not_forgotten(clock: FakeClock) -> None:
    limits = limiter(clock, rate=1.0, burst=2)  # refills in 2 s: sweeps at 2, 4 ...
    clock.advance(1.5)
    for _ in range(2):
        limits.check("k")  # empty; full again at 3.5
    clock.advance(0.6)
    limits.check("other")  # the sweep at 2.1 keeps "k": 0.6 tokens
    assert len(limits) == 2
    assert not limits.check("k").allowed


def test_sweeps_run_at_most_once_a_second(clock: FakeClock) -> None:
    limits = limiter(clock, rate=1000.0, burst=1)  # refills in 1 ms
    limits.check("a")
    clock.advance(0.5)
    limits.check("b")
    assert len(limits) == 2  # "a" is full but no sweep yet
    clock.advance(0.6)
    limits.check("b")
    assert len(limits) == 1


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, 0)])
def test_bad_settings_are_config_errors(rate: float, burst: int) -> None:
    with pytest.raises(ConfigError):
        KeyRateLimiter(rate, burst)


def test_the_default_clocks_work() -> None:
    decision = KeyRateLimiter(1.0, 1).check("k")
    assert decision.allowed
    assert decision.headers()["RateLimit-Remaining"] == "0"


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.01, 1000),
    burst=st.integers(1, 50),
    steps=st.lists(st.floats(0, 5), max_size=60),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[float]
) -> None:
    clock = FakeClock()
    limits = KeyRateLimiter(rate, burst, clock, wall=clock.wall)
    allowed = 0
    for step in steps:
        clock.advance(step)
        decision = limits.check("k")
        allowed += decision.allowed
        assert 0 <= decision.remaining <= burst - 1 or not decision.allowed
        assert decision.allowed == (decision.retry_after is None)
        assert decision.retry_after is None or decision.retry_after > 0
        assert allowed <= burst + rate * clock.now + 1e-6
