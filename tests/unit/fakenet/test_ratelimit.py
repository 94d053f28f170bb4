from __future__ import annotations

import json

from bsky_backfill.fakenet.ratelimit import GET_REPO, Bucket, HostLimiter
from bsky_backfill.fakenet.spec import HostSpec

LIST = "com.atproto.sync.listRepos"


class Clock:
    """A settable wall clock (epoch seconds)."""

    def __init__(self, now: float = 1_800_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_window_opens_at_the_first_request_and_counts_refusals_too() -> None:
    clock = Clock()
    bucket = Bucket(2, 10, clock)
    states = [bucket.consume("a") for _ in range(4)]
    assert [s.remaining for s in states] == [1, 0, 0, 0]
    assert [s.exceeded for s in states] == [False, False, True, True]
    assert {s.reset_at for s in states} == {clock.now + 10}
    assert not bucket.consume("b").exceeded  # another client has its own window
    clock.now += 10
    fresh = bucket.consume("a")
    assert (fresh.remaining, fresh.reset_at) == (1, clock.now + 10)


def test_headers_show_limit_remaining_policy_and_an_absolute_reset() -> None:
    clock = Clock()
    limiter = HostLimiter(HostSpec(global_limit=5, global_window_s=60), clock)
    headers, refusal = limiter.check("a", LIST)
    assert refusal is None
    assert headers == {
        "RateLimit-Limit": "5",
        "RateLimit-Remaining": "4",
        "RateLimit-Reset": str(int(clock.now) + 60),
        "RateLimit-Policy": "5;w=60",
    }


def test_past_the_limit_comes_429_rate_limit_exceeded_with_retry_after() -> None:
    clock = Clock()
    limiter = HostLimiter(HostSpec(global_limit=2, global_window_s=60), clock)
    limiter.check("a", LIST)
    limiter.check("a", LIST)
    clock.now += 20
    headers, refusal = limiter.check("a", LIST)
    assert refusal is not None
    assert refusal.status == 429
    assert isinstance(refusal.body, bytes)
    assert json.loads(refusal.body)["error"] == "RateLimitExceeded"
    assert refusal.headers["Retry-After"] == "40"
    assert headers["RateLimit-Remaining"] == "0"


def test_retry_after_and_headers_can_be_switched_off() -> None:
    quiet = HostLimiter(HostSpec(global_limit=1, retry_after=False), Clock())
    quiet.check("a", LIST)
    _, refusal = quiet.check("a", LIST)
    assert refusal is not None
    assert "Retry-After" not in refusal.headers
    assert "RateLimit-Limit" in refusal.headers
    bare = HostLimiter(HostSpec(global_limit=1, headers=False, retry_after=False), Clock())
    assert bare.check("a", LIST) == ({}, None)
    _, refusal = bare.check("a", LIST)
    assert refusal is not None
    assert refusal.status == 429
    assert dict(refusal.headers) == {}


def test_a_lying_host_advertises_more_than_it_enforces() -> None:
    limiter = HostLimiter(HostSpec(global_limit=3, advertise_factor=2.0), Clock())
    answers = [limiter.check("a", LIST) for _ in range(4)]
    assert [h["RateLimit-Limit"] for h, _ in answers] == ["6"] * 4
    assert [h["RateLimit-Remaining"] for h, _ in answers] == ["5", "4", "3", "3"]
    assert answers[3][0]["RateLimit-Policy"] == "6;w=300"
    assert [r is None for _, r in answers] == [True, True, True, False]


def test_get_repo_has_its_own_bucket() -> None:
    limiter = HostLimiter(HostSpec(global_limit=2, getrepo_limit=3), Clock())
    assert [limiter.check("a", GET_REPO)[1] is None for _ in range(4)] == [True] * 3 + [False]
    assert limiter.check("a", LIST)[1] is None  # the global bucket is untouched
    headers, _ = limiter.check("a", LIST)
    assert headers["RateLimit-Limit"] == "2"
    assert limiter.check("a", LIST)[1] is not None
    assert limiter.check("b", GET_REPO)[0]["RateLimit-Limit"] == "3"


def test_get_repo_in_both_buckets_shows_the_tightest() -> None:
    limiter = HostLimiter(
        HostSpec(global_limit=4, getrepo_limit=10, getrepo_in_global=True), Clock()
    )
    limiter.check("a", LIST)
    limiter.check("a", LIST)
    headers, _ = limiter.check("a", GET_REPO)
    assert (headers["RateLimit-Limit"], headers["RateLimit-Remaining"]) == ("4", "1")
    limiter.check("a", GET_REPO)
    headers, refusal = limiter.check("a", GET_REPO)  # global exceeded, getRepo bucket not
    assert refusal is not None
    assert headers["RateLimit-Limit"] == "4"


def test_an_older_pds_counts_get_repo_in_the_global_bucket() -> None:
    limiter = HostLimiter(HostSpec(global_limit=2, getrepo_limit=None), Clock())
    limiter.check("a", GET_REPO)
    limiter.check("a", LIST)
    headers, refusal = limiter.check("a", GET_REPO)
    assert refusal is not None
    assert headers["RateLimit-Limit"] == "2"


def test_expired_windows_of_many_clients_are_swept() -> None:
    clock = Clock()
    bucket = Bucket(1, 1, clock)
    for n in range(10_000):
        bucket.consume(f"10.0.{n // 256}.{n % 256}")
    clock.now += 2
    bucket.consume("fresh")
    assert len(bucket._windows) == 1
