"""The C part of the repo reader (src/bsky_backfill/atproto/_fastrepo.c).

Optional: where it cannot be compiled the package installs without it and reads repos
in pure Python (same results, slower). Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bsky_backfill.atproto._fastrepo",
            sources=["src/bsky_backfill/atproto/_fastrepo.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            libraries=["dl"],
            optional=True,
        )
    ]
)
