from __future__ import annotations

from collections.abc import Callable

import pytest

from bsky_backfill.fakenet.population import PopulationSpec
from bsky_backfill.fakenet.spec import HostSpec, NetworkSpec


def test_defaults_are_the_reference_pds_limits() -> None:
    spec = HostSpec()
    assert (spec.global_limit, spec.global_window_s) == (3000, 300)
    assert (spec.getrepo_limit, spec.getrepo_window_s) == (6000, 300)
    assert spec.headers
    assert spec.advertise_factor == 1.0


def test_scaling_multiplies_limits_but_never_below_one() -> None:
    scaled = HostSpec().scaled(0.01)
    assert (scaled.global_limit, scaled.getrepo_limit) == (30, 60)
    assert scaled.global_window_s == 300
    assert HostSpec(getrepo_limit=None).scaled(0.0001) == HostSpec(
        global_limit=1, getrepo_limit=None
    )
    with pytest.raises(ValueError, match="positive"):
        HostSpec().scaled(0)


def test_one_host_spec_serves_every_host_or_one_per_host() -> None:
    population = PopulationSpec(hosts=2)
    lying = HostSpec(advertise_factor=2.0)
    assert NetworkSpec(population, hosts=lying).host(1) is lying
    pair = NetworkSpec(population, hosts=(HostSpec(), lying))
    assert pair.host(1) is lying
    with pytest.raises(IndexError):
        pair.host(2)


@pytest.mark.parametrize(
    "build",
    [
        lambda: NetworkSpec(PopulationSpec(hosts=3), hosts=(HostSpec(),)),
        lambda: NetworkSpec(legacy_key_share=1.5),
        lambda: NetworkSpec(build_threads=0),
        lambda: NetworkSpec(log_limit=0),
        lambda: HostSpec(global_limit=0),
        lambda: HostSpec(getrepo_window_s=0),
        lambda: HostSpec(advertise_factor=0),
    ],
)
def test_bad_options_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"must|HostSpecs"):
        build()
