"""AT Protocol building blocks: syntax, crypto, CAR/MST/repo reader, identity, XRPC client.

The reader (``car``, ``mst``, ``repo``) is pure and synchronous — bytes in, records out —
and usable as a library on its own.
"""

__all__: list[str] = []
