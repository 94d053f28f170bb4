from __future__ import annotations

import pytest

from bsky_backfill.fakenet.requestlog import LogEntry, RequestLog


def entry(n: int, *, host: int | None = 0, status: int = 200) -> LogEntry:
    return LogEntry(
        float(n), 1e9 + n, host, "127.0.0.1", "com.atproto.sync.getRepo", f"d{n}", status, n
    )


def test_filters_combine_and_keep_arrival_order() -> None:
    log = RequestLog()
    for n in range(6):
        log.append(entry(n, host=n % 2, status=429 if n >= 4 else 200))
    log.append(entry(6, host=None))
    assert [e.did for e in log.entries(host=1)] == ["d1", "d3", "d5"]
    assert [e.did for e in log.entries(host=0, status=429)] == ["d4"]
    assert [e.did for e in log.entries(plc=True)] == ["d6"]
    assert len(log.entries(client="10.0.0.1")) == 0
    assert log.entries(did="d2")[0].to_dict()["sent"] == 2
    with pytest.raises(ValueError, match="either"):
        log.entries(host=0, plc=True)


def test_a_bounded_log_drops_the_oldest_and_counts_them() -> None:
    log = RequestLog(limit=3)
    for n in range(5):
        log.append(entry(n))
    assert [e.did for e in log] == ["d2", "d3", "d4"]
    assert log.dropped == 2
    assert log.clear() == 3
    assert (len(log), log.dropped) == (0, 0)
