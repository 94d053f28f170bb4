"""Every module declares ``__all__``: it names only what exists, and every public class or
function the module defines is in it (httpx's test_exported_members, per module)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import bsky_backfill


def all_modules() -> list[ModuleType]:
    names = [
        info.name
        for info in pkgutil.walk_packages(bsky_backfill.__path__, "bsky_backfill.")
        if not info.name.rsplit(".", 1)[-1].startswith("_")
    ]
    return [bsky_backfill, *(importlib.import_module(name) for name in names)]


@pytest.mark.parametrize("module", all_modules(), ids=lambda m: m.__name__)
def test_all_lists_exactly_the_public_definitions(module: ModuleType) -> None:
    exported = set(module.__all__)
    assert all(hasattr(module, name) for name in exported), exported - set(vars(module))
    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }
    assert defined <= exported, f"public but not in __all__: {sorted(defined - exported)}"
