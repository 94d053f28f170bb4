"""The package's C parts: the repo reader's hot path (atproto/_fastrepo.c) and
rows to Arrow columns (sinks/_arrowcols.c). Everything else is in pyproject.toml.

Optional: where they cannot be compiled the package installs without them and does the
same work in Python (same results, slower).
"""

from setuptools import Extension, setup

FLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(
    ext_modules=[
        Extension(
            "bsky_backfill.atproto._fastrepo",
            sources=["src/bsky_backfill/atproto/_fastrepo.c"],
            extra_compile_args=FLAGS,
            libraries=["dl"],
            optional=True,
        ),
        Extension(
            "bsky_backfill.sinks._arrowcols",
            sources=["src/bsky_backfill/sinks/_arrowcols.c"],
            extra_compile_args=FLAGS,
            optional=True,
        ),
    ]
)
