from __future__ import annotations

import pytest

from bsky_backfill.core.netguard import RefusedAddress, check_endpoint


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:2583",
        "http://localhost:8080",
        "http://api.localhost",
        "http://10.0.0.1",
        "http://172.16.5.4",
        "http://192.168.1.1",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:80",
        "http://[fe80::1]",
        "http://[fd00::1]",
        "http://[::ffff:127.0.0.1]",
        "http://[::ffff:169.254.169.254]",
        "http://0.0.0.0",
        "http://224.0.0.1",
        "file:///etc/passwd",
        "gopher://example.com",
        "http://",
    ],
)
def test_private_and_odd_endpoints_are_refused(url: str) -> None:
    with pytest.raises(RefusedAddress):
        check_endpoint(url, allow_private=False, did="did:plc:x")


@pytest.mark.parametrize(
    "url", ["https://bsky.social", "https://morel.us-east.host.bsky.network", "http://8.8.8.8"]
)
def test_public_endpoints_pass(url: str) -> None:
    check_endpoint(url, allow_private=False)


def test_a_test_network_may_allow_loopback_but_never_other_schemes() -> None:
    check_endpoint("http://127.0.0.1:1234", allow_private=True)
    with pytest.raises(RefusedAddress):
        check_endpoint("file:///etc/passwd", allow_private=True)
