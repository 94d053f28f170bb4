from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from bsky_backfill.atproto.ratelimit import RateLimitInfo
from bsky_backfill.core.limits import HostLimiter, LimiterOptions
from bsky_backfill.fakenet.ratelimit import GET_REPO
from bsky_backfill.fakenet.ratelimit import HostLimiter as FakenetHost
from bsky_backfill.fakenet.spec import HostSpec

WALL0 = 1_800_000_000.0


class FakeTime:
    """Virtual time: sleepers wake in time order once every task has run as far as it
    can, so tests of pacing run instantly and exactly."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = itertools.count()
        self._driver: asyncio.Task[None] | None = None

    def clock(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL0 + self.now

    async def sleep(self, seconds: float) -> None:
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0), next(self._count), wake))
        if self._driver is None or self._driver.done():
            self._driver = asyncio.ensure_future(self._drive())
        await wake

    async def _drive(self) -> None:
        while self._sleepers:
            for _ in range(50):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            at, _, wake = heapq.heappop(self._sleepers)
            self.now = max(self.now, at)
            wake.set_result(None)


def limiter(t: FakeTime, **options: float) -> HostLimiter:
    return HostLimiter(LimiterOptions(**options), clock=t.clock, wall=t.wall, sleep=t.sleep)


async def run_requests(lim: HostLimiter, t: FakeTime, count: int) -> list[float]:
    starts: list[float] = []

    async def one() -> None:
        async with lim.slot():
            starts.append(t.now)

    await asyncio.gather(*(one() for _ in range(count)))
    return sorted(starts)


async def test_requests_are_spaced_at_the_configured_rate() -> None:
    t = FakeTime()
    starts = await run_requests(limiter(t, rate=10), t, 50)
    assert starts[-1] == pytest.approx(4.9)
    assert min(b - a for a, b in itertools.pairwise(starts)) == pytest.approx(0.1)


async def test_headers_spread_the_remaining_quota_over_the_window() -> None:
    t = FakeTime()
    lim = limiter(t, rate=1, max_rate=1000, max_in_flight=1)
    lim.observe(RateLimitInfo(limit=3000, remaining=3000, reset_at=WALL0 + 300))
    assert lim.rate == pytest.approx(10.0)
    lim.observe(RateLimitInfo(limit=3000, remaining=150, reset_at=WALL0 + 300))
    assert lim.rate == pytest.approx(0.5)


async def test_a_spent_quota_pauses_until_the_reset() -> None:
    t = FakeTime()
    lim = limiter(t, rate=10)
    lim.observe(RateLimitInfo(remaining=0, reset_at=WALL0 + 42))
    assert lim.paused
    starts = await run_requests(lim, t, 1)
    assert starts == [pytest.approx(42.5)]  # the reset, plus slack for whole seconds


async def test_a_429_despite_room_left_pauses_and_then_trusts_headers_less() -> None:
    t = FakeTime()
    lim = limiter(t, rate=10, max_rate=100)
    lim.observe(RateLimitInfo(remaining=500, reset_at=t.wall() + 300))  # "room left"
    lim.rate_limited(retry_after=30)
    assert lim.paused
    assert (await run_requests(lim, t, 1))[0] >= 30
    lim.observe(RateLimitInfo(remaining=3000, reset_at=t.wall() + 300))
    assert lim.rate == pytest.approx(0.7 * 10)  # the same headers, believed less


async def test_a_429_at_the_end_of_a_spent_window_is_no_lie() -> None:
    t = FakeTime()
    lim = limiter(t, rate=10, max_rate=100)
    lim.observe(RateLimitInfo(remaining=1, reset_at=t.wall() + 5))
    lim.rate_limited(retry_after=5)
    lim.observe(RateLimitInfo(remaining=3000, reset_at=t.wall() + 300))
    assert lim.rate == pytest.approx(10.0)


async def test_trust_comes_back_after_a_clean_window() -> None:
    t = FakeTime()
    lim = limiter(t, rate=10, max_rate=100)
    lim.observe(RateLimitInfo(remaining=500, reset_at=t.wall() + 300))
    lim.rate_limited(retry_after=1)
    lim.observe(RateLimitInfo(remaining=3000, reset_at=WALL0 + 600))  # the next window
    lim.observe(RateLimitInfo(remaining=3000, reset_at=WALL0 + 900))  # and a clean one
    assert lim.rate > 0.7 * 3000 / (900 - t.now)


async def test_a_429_without_headers_backs_off_exponentially() -> None:
    t = FakeTime()
    lim = limiter(t, rate=10)
    lim.rate_limited(None)
    first_pause = lim.paused_seconds
    await run_requests(lim, t, 1)
    lim.rate_limited(None)
    assert lim.paused_seconds - first_pause == pytest.approx(2 * first_pause)
    assert lim.rate == pytest.approx(2.5)  # halved twice


async def test_in_flight_requests_are_capped() -> None:
    t = FakeTime()
    lim = limiter(t, rate=1000, max_rate=1000, max_in_flight=3)
    active = peak = 0

    async def one() -> None:
        nonlocal active, peak
        async with lim.slot():
            active += 1
            peak = max(peak, active)
            await t.sleep(1)
            active -= 1

    await asyncio.gather(*(one() for _ in range(12)))
    assert peak == 3


async def test_a_pause_holds_back_requests_already_waiting() -> None:
    t = FakeTime()
    lim = limiter(t, rate=1, max_in_flight=10)
    waiting = asyncio.gather(*(run_requests(lim, t, 1) for _ in range(3)))
    await t.sleep(0.5)  # the first request has had its slot; two wait for theirs
    lim.rate_limited(retry_after=100)
    starts = sorted(s for (s,) in await waiting)
    assert starts[0] == 0.0
    assert starts[1] >= 100


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="min_rate"):
        LimiterOptions(rate=0)


async def test_requests_in_flight_are_kept_out_of_the_budget() -> None:
    t = FakeTime()
    lim = limiter(t, rate=1000, max_rate=1000, max_in_flight=4)
    async with lim.slot(), lim.slot():
        lim.observe(RateLimitInfo(remaining=102, reset_at=t.wall() + 100))
    assert lim.rate == pytest.approx(1.0)  # (102 - 2 in flight) / 100 s


async def test_slots_reserved_at_the_old_pace_do_not_spill_past_a_spent_quota() -> None:
    t = FakeTime()
    lim = limiter(t, rate=100, max_rate=100, max_in_flight=10)
    lim.observe(RateLimitInfo(remaining=3, reset_at=t.wall() + 10))
    starts = await run_requests(lim, t, 6)
    assert sum(1 for s in starts if s < 10) == 3  # the rest wait for the next window
    assert len(starts) == 6


async def test_waits_for_a_turn_are_counted_with_their_seconds() -> None:
    t = FakeTime()
    lim = limiter(t, rate=1, max_in_flight=3)
    await run_requests(lim, t, 3)  # at 0, 1 and 2 s: two of them waited, 1 s and 2 s
    assert lim.waits == 2
    assert lim.waited_seconds == pytest.approx(3.0)


async def test_the_quota_left_follows_headers_and_requests_sent() -> None:
    t = FakeTime()
    lim = limiter(t, rate=10)
    assert lim.quota_remaining is None
    lim.observe(RateLimitInfo(remaining=100, reset_at=t.wall() + 300))
    await run_requests(lim, t, 4)
    assert lim.quota_remaining == 96


async def test_a_host_that_advertises_twice_its_limit_is_paced_at_its_real_limit() -> None:
    t = FakeTime()
    host = FakenetHost(
        HostSpec(getrepo_limit=40, getrepo_window_s=10, advertise_factor=2.0), t.wall
    )
    lim = limiter(t, rate=1, max_rate=1000, max_in_flight=4)
    refused = 0

    async def one() -> None:
        nonlocal refused
        while True:
            async with lim.slot():
                headers, refusal = host.check("client", GET_REPO)
                await t.sleep(0.05)  # the answer's way back
            info = RateLimitInfo.from_headers(headers, now=t.wall())
            if refusal is None:
                lim.observe(info)
                return
            refused += 1
            lim.rate_limited(info.retry_after, info.remaining, info.reset_at)

    await asyncio.gather(*(one() for _ in range(400)))
    # The first window's refusals show the lie; after it, 40 per 10 s without a refusal:
    # 400 requests in 10 windows, the first cut short by its refusal.
    assert refused <= 2
    assert t.now < 10 * 10 + 5


async def test_a_refusal_claiming_no_room_or_from_an_earlier_window_is_no_lie() -> None:
    t = FakeTime()
    lim = limiter(t, rate=1, max_rate=1000)
    lim.observe(RateLimitInfo(limit=100, remaining=50, reset_at=WALL0 + 10))
    lim.rate_limited(retry_after=10, remaining=0, reset_at=WALL0 + 10)  # the host's count
    lim.observe(RateLimitInfo(limit=100, remaining=50, reset_at=WALL0 + 30))
    lim.rate_limited(retry_after=1, remaining=40, reset_at=WALL0 + 10)  # a late old answer
    lim.observe(RateLimitInfo(limit=100, remaining=100, reset_at=WALL0 + 60))
    assert lim.rate == pytest.approx(100 / 60)  # believed in full


async def test_a_refusal_without_headers_costs_trust_for_a_while_only() -> None:
    t = FakeTime()
    lim = limiter(t, rate=1, max_rate=1000)
    lim.observe(RateLimitInfo(limit=3000, remaining=2990, reset_at=WALL0 + 300))
    lim.rate_limited(retry_after=None)  # a proxy's refusal, say: no headers to measure by
    for window in range(2, 6):  # the next window, then clean ones
        lim.observe(RateLimitInfo(limit=3000, remaining=3000, reset_at=WALL0 + 300 * window))
    assert lim.rate == pytest.approx(3000 / 1500)  # believed in full again


async def test_late_answers_from_an_earlier_window_change_nothing() -> None:
    t = FakeTime()
    lim = limiter(t, rate=1, max_rate=1000)
    lim.observe(RateLimitInfo(limit=100, remaining=90, reset_at=WALL0 + 20))  # this window
    lim.observe(RateLimitInfo(limit=100, remaining=1, reset_at=WALL0 + 10))  # a late one
    lim.rate_limited(retry_after=1, remaining=0, reset_at=WALL0 + 10)  # and its refusal
    assert lim.rate == pytest.approx(90 / 20)
    lim.rate_limited(retry_after=1, remaining=80, reset_at=WALL0 + 20)  # a lie, this window
    lim.observe(RateLimitInfo(limit=100, remaining=100, reset_at=WALL0 + 40))
    assert lim.rate == pytest.approx(19 / 40)  # 20 counted at the refusal, less the refusal


async def test_what_a_host_counted_under_another_limit_is_not_carried_over() -> None:
    t = FakeTime()
    lim = limiter(t, rate=1, max_rate=1000)
    lim.observe(RateLimitInfo(limit=6000, remaining=1000, reset_at=WALL0 + 10))  # 5,000 used
    lim.observe(RateLimitInfo(limit=80, remaining=60, reset_at=WALL0 + 10))  # another bucket
    lim.rate_limited(retry_after=1, remaining=60, reset_at=WALL0 + 10)
    for window in range(2, 10):
        lim.observe(RateLimitInfo(limit=80, remaining=80, reset_at=WALL0 + 10 * window))
    assert lim.rate == pytest.approx(20 / 90)  # the 20 of 80 it had counted, never more


async def test_a_liar_refusing_again_at_the_count_measured_is_not_slowed_further() -> None:
    t = FakeTime()
    lim = limiter(t, rate=1, max_rate=1000)
    for window in (1, 2):  # refused at 50 of an advertised 100, in two windows
        lim.observe(RateLimitInfo(limit=100, remaining=51, reset_at=WALL0 + 10 * window))
        lim.rate_limited(retry_after=1, remaining=50, reset_at=WALL0 + 10 * window)
    lim.observe(RateLimitInfo(limit=100, remaining=100, reset_at=WALL0 + 30))
    assert lim.rate == pytest.approx(49 / 30)  # 49 of 100 believed, not 70 % of that


async def test_a_new_advertised_limit_is_believed_again() -> None:
    t = FakeTime()
    lim = limiter(t, rate=1, max_rate=1000)
    lim.observe(RateLimitInfo(limit=100, remaining=50, reset_at=WALL0 + 10))
    lim.rate_limited(retry_after=10, remaining=50, reset_at=WALL0 + 10)  # refused, "50 left"
    lim.observe(RateLimitInfo(limit=100, remaining=100, reset_at=WALL0 + 30))
    assert lim.rate == pytest.approx(50 / 30)  # half of the advertised 100, over 30 s
    lim.observe(RateLimitInfo(limit=100, remaining=100, reset_at=WALL0 + 60))
    assert lim.rate == pytest.approx(50 / 60)  # a clean window: still no more than half
    lim.observe(RateLimitInfo(limit=80, remaining=80, reset_at=WALL0 + 90))
    lim.observe(RateLimitInfo(limit=80, remaining=80, reset_at=WALL0 + 120))
    lim.observe(RateLimitInfo(limit=80, remaining=80, reset_at=WALL0 + 150))
    lim.observe(RateLimitInfo(limit=80, remaining=80, reset_at=WALL0 + 180))
    assert lim.rate == pytest.approx(80 / 180)  # the new limit, believed in full
