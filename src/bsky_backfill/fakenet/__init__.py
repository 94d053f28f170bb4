"""A simulated AT Protocol network (PLC directory + PDS hosts) for tests, demo and benchmarks.

Its repo writer shares no code with the reader's MST walker, so one cannot hide the
other's bug; the real ``@atproto/repo`` package checks what it writes.
"""

__all__: list[str] = []
