"""Cutting a job's pending DIDs into shard tasks, host by host.

A shard is ``{host: budget}``: its task claims up to ``budget`` of that host's DIDs. A
big host is cut into many shards (several workers may take its DIDs at once: the shared
limiter keeps them within the host's policy together); small hosts share a shard, so a
long tail of hosts with a few DIDs each is not a task per host.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["cut_shards"]


def cut_shards(pending: Mapping[str, int], shard_size: int) -> list[dict[str, int]]:
    """Shards of at most ``shard_size`` DIDs covering every pending DID, busiest host
    first (its shards start earliest: it bounds the job's wall time)."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    shards: list[dict[str, int]] = []
    current: dict[str, int] = {}
    room = shard_size
    for host, count in sorted(pending.items(), key=lambda item: (-item[1], item[0])):
        left = count
        while left > 0:
            take = min(left, room)
            current[host] = current.get(host, 0) + take
            left -= take
            room -= take
            if room == 0:
                shards.append(current)
                current, room = {}, shard_size
    if current:
        shards.append(current)
    return shards
