"""check_api_config: local paths stay in the data roots, requests go to public hosts only."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bsky_backfill.api.limits import ApiLimits
from bsky_backfill.api.safety import (
    MAX_CONFIG_BYTES,
    ApiPolicy,
    check_api_config,
    check_config_size,
    resolve_host,
)
from bsky_backfill.config import BackfillConfig, load_config
from bsky_backfill.config.schema import ParquetStorage
from bsky_backfill.errors import ConfigError, ConfigProblems

PUBLIC_IP = "93.184.216.34"
NAMES = {
    "plc.directory": [PUBLIC_IP],
    "public.example": [PUBLIC_IP, "2606:2800:220:1:248:1893:25c8:1946"],
    "pds.example": [PUBLIC_IP],
    "internal.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "mixed.example": [PUBLIC_IP, "127.0.0.1"],
    "v6-private.example": ["fd00::1"],
    "garbage.example": ["not-an-address"],
    "empty.example": [],
}
STORAGE_PATH = "backfill.storage.path"
FLAG_KEY = "backfill.network.allow_private_addresses"
PLC_KEY = "backfill.identity.plc_url"


def fake_resolve(host: str) -> list[str]:
    """Resolves :data:`NAMES`; any other name fails as getaddrinfo does."""
    if host not in NAMES:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return NAMES[host]


def load(base_dir: Path, **sections: str) -> BackfillConfig:
    """A config with ``sections`` (flow YAML) over an inline source and ``storage: out``."""
    parts = {
        "source": "{type: inline, dids: [did:plc:z72i7hdynmk6r22z27h6tvur]}",
        "storage": "{type: parquet, path: out}",
        **sections,
    }
    lines = ["backfill:", "  name: study", '  time_range: {start_date: "2025-01-02"}']
    lines += [f"  {key}: {value}" for key, value in parts.items()]
    return load_config("\n".join(lines) + "\n", base_dir=base_dir, environ={})


def refused(config: BackfillConfig, policy: ApiPolicy) -> dict[str, str]:
    """Key -> message of every problem ``check_api_config`` reports; fails if none."""
    with pytest.raises(ConfigError) as info:
        check_api_config(config, policy)
    problems = info.value.problems
    assert len({p.key for p in problems}) == len(problems), "one problem per key"
    return {str(p.key): p.message for p in problems}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "dids.txt").write_text("did:plc:z72i7hdynmk6r22z27h6tvur\n")
    return path


@pytest.fixture
def policy(root: Path) -> ApiPolicy:
    return ApiPolicy((root,), resolve=fake_resolve)


# --- local paths -------------------------------------------------------------------------


def test_paths_inside_a_root_are_accepted(root: Path, policy: ApiPolicy) -> None:
    (root / "dids.txt").write_text("did:plc:z72i7hdynmk6r22z27h6tvur\n")
    config = load(
        root,
        source="{type: file, path: dids.txt}",
        filters="{subject_uris: {path: lists/uris.parquet}}",
        storage=f"{{type: parquet, path: {root / 'out'}}}",
    )
    check_api_config(config, policy)


def test_the_default_output_folder_inside_a_root_is_accepted(root: Path, policy: ApiPolicy) -> None:
    lines = ["backfill:", "  name: study", '  time_range: {start_date: "2025-01-02"}']
    lines.append("  source: {type: inline, dids: [did:plc:z72i7hdynmk6r22z27h6tvur]}")
    check_api_config(load_config("\n".join(lines), base_dir=root, environ={}), policy)


def test_dotdot_traversal_is_refused(root: Path, policy: ApiPolicy) -> None:
    problems = refused(load(root, storage='{type: parquet, path: "../escape"}'), policy)
    assert list(problems) == [STORAGE_PATH]
    assert "must be inside one of the server's data roots: " + str(root) in problems[STORAGE_PATH]
    assert "give a path below one of them" in problems[STORAGE_PATH]


def test_dotdot_that_comes_back_inside_is_accepted(root: Path, policy: ApiPolicy) -> None:
    check_api_config(load(root, storage=f'{{type: parquet, path: "../{root.name}/out"}}'), policy)


def test_an_absolute_path_outside_is_refused(root: Path, outside: Path, policy: ApiPolicy) -> None:
    config = load(root, source=f"{{type: file, path: {outside / 'dids.txt'}}}")
    assert list(refused(config, policy)) == ["backfill.source.path"]


def test_a_sibling_folder_sharing_the_roots_prefix_is_refused(
    root: Path, policy: ApiPolicy
) -> None:
    sibling = root.parent / (root.name + "-other")  # /x/data-other is not inside /x/data
    assert list(refused(load(root, storage=f"{{type: jsonl, path: {sibling}}}"), policy)) == [
        STORAGE_PATH
    ]


def test_a_symlinked_folder_inside_the_root_pointing_outside_is_refused(
    root: Path, outside: Path, policy: ApiPolicy
) -> None:
    (root / "link").symlink_to(outside, target_is_directory=True)
    problems = refused(load(root, storage="{type: parquet, path: link/new/out}"), policy)
    assert list(problems) == [STORAGE_PATH]


def test_a_symlinked_file_inside_the_root_pointing_outside_is_refused(
    root: Path, outside: Path, policy: ApiPolicy
) -> None:
    (root / "dids.txt").symlink_to(outside / "dids.txt")
    config = load(root, source="{type: file, path: dids.txt}")
    assert list(refused(config, policy)) == ["backfill.source.path"]


def test_a_dangling_symlink_pointing_outside_is_refused(
    root: Path, outside: Path, policy: ApiPolicy
) -> None:
    # Writing to it would create the target, outside the root.
    (root / "out").symlink_to(outside / "not-yet")
    assert list(refused(load(root), policy)) == [STORAGE_PATH]


def test_a_symlink_inside_the_root_pointing_inside_is_accepted(
    root: Path, policy: ApiPolicy
) -> None:
    (root / "real").mkdir()
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    check_api_config(load(root, storage="{type: parquet, path: alias/out}"), policy)


def test_a_symlinked_root_is_accepted(tmp_path: Path) -> None:
    real = tmp_path / "real-data"
    real.mkdir()
    (tmp_path / "data-link").symlink_to(real, target_is_directory=True)
    linked = tmp_path / "data-link"
    policy = ApiPolicy((linked,), resolve=fake_resolve)
    check_api_config(load(linked, storage="{type: parquet, path: out}"), policy)
    check_api_config(load(real, storage="{type: parquet, path: out}"), policy)


def test_an_output_folder_that_does_not_exist_yet_is_accepted_and_not_created(
    root: Path, policy: ApiPolicy
) -> None:
    check_api_config(load(root, storage="{type: sqlite, path: new/deeper/out}"), policy)
    assert not (root / "new").exists()


def test_any_of_several_roots_will_do(tmp_path: Path, root: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    policy = ApiPolicy((root, other), resolve=fake_resolve)
    config = load(root, storage=f"{{type: parquet, path: {other / 'out'}}}")
    check_api_config(config, policy)
    problems = refused(load(root, storage=f"{{type: parquet, path: {tmp_path}}}"), policy)
    assert f"{root}, {other}" in problems[STORAGE_PATH]


# Every local path field of the schema, each pointed outside the root.
PATH_FIELDS = [
    ({"source": "{type: file, path: OUT/dids.txt}"}, "backfill.source.path"),
    ({"source": "{type: sqlite, path: OUT/dids.sqlite}"}, "backfill.source.path"),
    ({"source": "{type: derived, dataset: OUT/earlier}"}, "backfill.source.dataset"),
    ({"filters": "{subject_uris: {path: OUT/uris.parquet}}"}, "backfill.filters.subject_uris.path"),
    ({"filters": "{subject_uris: {path: OUT/records}}"}, "backfill.filters.subject_uris.path"),
    ({"storage": "{type: parquet, path: OUT/out}"}, "backfill.storage.path"),
    ({"storage": "{type: sqlite, path: OUT/out}"}, "backfill.storage.path"),
    ({"storage": "{type: jsonl, path: OUT/out}"}, "backfill.storage.path"),
    (
        {"storage": "{type: s3, path: s3://bucket/prefix, work_dir: OUT/work}"},
        "backfill.storage.work_dir",
    ),
    ({"storage": "{type: dynamodb, work_dir: OUT/work}"}, "backfill.storage.work_dir"),
]


@pytest.mark.parametrize(("sections", "key"), PATH_FIELDS)
def test_every_local_path_field_is_checked(
    sections: dict[str, str], key: str, root: Path, outside: Path, policy: ApiPolicy
) -> None:
    filled = {name: text.replace("OUT", str(outside)) for name, text in sections.items()}
    assert list(refused(load(root, **filled), policy)) == [key]
    inside = {name: text.replace("OUT", str(root)) for name, text in sections.items()}
    check_api_config(load(root, **inside), policy)


@pytest.mark.parametrize("storage", ["{type: parquet}", "{type: s3, path: s3://bucket/p}"])
def test_default_folders_follow_base_dir(storage: str, outside: Path, policy: ApiPolicy) -> None:
    # ./data/<name> resolves against base_dir: outside the root when base_dir is.
    problems = refused(load(outside, storage=storage), policy)
    assert list(problems) in (["backfill.storage.path"], ["backfill.storage.work_dir"])


def test_s3_paths_are_not_local_paths(root: Path, policy: ApiPolicy) -> None:
    config = load(
        root,
        source="{type: s3, uri: s3://bucket/dids.csv}",
        storage="{type: dynamodb, work_dir: w, overflow_path: s3://bucket/big}",
    )
    check_api_config(config, policy)


def test_a_policy_needs_a_data_root() -> None:
    with pytest.raises(ValueError, match="data root"):
        ApiPolicy(())


# --- limits ------------------------------------------------------------------------------


def test_pace_hosts_and_repo_size_over_the_servers_limits_are_refused_each_at_its_key(
    root: Path,
) -> None:
    policy = ApiPolicy((root,), limits=ApiLimits(5.0, 8, 1024), resolve=fake_resolve)
    config = load(
        root,
        processing="{requests_per_second: 5.5, max_concurrent_pds: 9}",
        network="{max_repo_bytes: 2048}",
    )
    problems = refused(config, policy)
    assert problems == {
        "backfill.processing.requests_per_second": "is 5.5, over this server's limit of 5 "
        "requests per second per host; ask for at most 5 (the server's operator sets the limit)",
        "backfill.processing.max_concurrent_pds": "is 9, over this server's limit of 8 hosts "
        "at once; ask for at most 8 (the server's operator sets the limit)",
        "backfill.network.max_repo_bytes": "is 2,048, over this server's limit of 1,024 bytes "
        "per repo; ask for at most 1,024 (the server's operator sets the limit)",
    }


def test_values_at_the_limits_are_accepted(root: Path) -> None:
    policy = ApiPolicy((root,), limits=ApiLimits(5.0, 8, 1024), resolve=fake_resolve)
    config = load(
        root,
        processing="{requests_per_second: 5, max_concurrent_pds: 8}",
        network="{max_repo_bytes: 1024}",
    )
    check_api_config(config, policy)


def test_the_config_defaults_fit_the_default_limits(root: Path, policy: ApiPolicy) -> None:
    check_api_config(load(root), policy)


def test_a_distributed_section_is_refused_the_operator_sets_it(
    root: Path, policy: ApiPolicy
) -> None:
    config = load(root, distributed="{state_url: 'postgresql://db.example/x'}")
    problems = refused(config, policy)
    assert list(problems) == ["backfill.distributed"]
    assert "set by the server's operator" in problems["backfill.distributed"]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="positive"):
        ApiLimits(requests_per_second=0)


# --- private addresses -------------------------------------------------------------------


def test_allow_private_addresses_in_the_config_is_refused(root: Path, policy: ApiPolicy) -> None:
    problems = refused(load(root, network="{allow_private_addresses: true}"), policy)
    assert list(problems) == [FLAG_KEY]
    assert "refused by this server" in problems[FLAG_KEY]


def test_a_policy_allowing_private_addresses_allows_them(root: Path) -> None:
    def no_lookups(host: str) -> list[str]:
        raise AssertionError(f"resolved {host} although private addresses are allowed")

    policy = ApiPolicy((root,), allow_private_addresses=True, resolve=no_lookups)
    config = load(
        root,
        network="{allow_private_addresses: true}",
        identity="{plc_url: 'http://127.0.0.1:2582'}",
        source="{type: pds, hosts: ['http://localhost:2583', 'http://internal.example']}",
    )
    check_api_config(config, policy)


PRIVATE_URLS = [
    "http://127.0.0.1:2582",
    "http://[::1]",
    "http://10.0.0.5",
    "http://192.168.1.1",
    "http://172.16.0.1",
    "http://100.64.0.1",  # carrier-grade NAT
    "http://169.254.169.254",  # cloud metadata
    "http://[fe80::1]",
    "http://[fd00::1]",
    "http://0.0.0.0",
    "http://[::]",
    "http://224.0.0.1",
    "http://240.0.0.1",
    "http://[::ffff:127.0.0.1]",
    "http://[::ffff:169.254.169.254]",
    "http://[64:ff9b::a00:1]",  # NAT64 of 10.0.0.1
    "http://[64:ff9b:1::1]",  # local-use NAT64
    "http://[2002:a00:1::1]",  # 6to4 of 10.0.0.1
    "http://[::a00:1]",  # IPv4-compatible 10.0.0.1
    "http://127.1",
    "http://2130706433",
    "http://0x7f.0.0.1",
    "http://0177.0.0.1",
    "http://localhost:2582",
    "http://LOCALHOST.",
    "http://ip6-localhost",
    "http://pds.localhost",
    "https://internal.example",
    "https://metadata.example",
    "https://mixed.example",  # one public address is not enough
    "https://v6-private.example",
    "https://garbage.example",
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_a_plc_url_that_is_not_public_is_refused(url: str, root: Path, policy: ApiPolicy) -> None:
    # The flag lets the loader take literal private addresses; the server refuses both.
    config = load(root, network="{allow_private_addresses: true}", identity=f"{{plc_url: '{url}'}}")
    problems = refused(config, policy)
    assert set(problems) == {FLAG_KEY, PLC_KEY}
    assert "the server sends requests only to public hosts" in problems[PLC_KEY]


def test_a_name_resolving_to_a_private_address_is_refused_without_naming_it(
    root: Path, policy: ApiPolicy
) -> None:
    config = load(root, identity="{plc_url: 'https://internal.example'}")
    with pytest.raises(ConfigError) as info:
        check_api_config(config, policy)
    assert not isinstance(info.value, ConfigProblems)
    assert info.value.key == PLC_KEY
    assert "resolves to a loopback, private" in info.value.message
    assert "10.1.2.3" not in str(info.value)  # internal DNS is not disclosed


@pytest.mark.parametrize("host", ["nowhere.example", "empty.example"])
def test_a_name_that_does_not_resolve_is_refused(host: str, root: Path, policy: ApiPolicy) -> None:
    problems = refused(load(root, identity=f"{{plc_url: 'https://{host}'}}"), policy)
    assert "does not resolve: check the spelling" in problems[PLC_KEY]


def test_a_name_that_cannot_be_encoded_is_refused(root: Path) -> None:
    def idna_fails(host: str) -> list[str]:
        raise UnicodeError("label too long")

    policy = ApiPolicy((root,), resolve=idna_fails)
    assert list(refused(load(root), policy)) == [PLC_KEY]  # the default plc.directory


@pytest.mark.parametrize(
    "url",
    [
        "https://plc.directory",
        "https://public.example:8443",
        f"http://{PUBLIC_IP}",
        "http://[2606:2800:220:1:248:1893:25c8:1946]",
        "http://[64:ff9b::5db8:d822]",  # NAT64 of 93.184.216.34
    ],
)
def test_a_public_host_is_accepted(url: str, root: Path, policy: ApiPolicy) -> None:
    check_api_config(load(root, identity=f"{{plc_url: '{url}'}}"), policy)


def test_pds_hosts_are_checked_each_at_its_index(root: Path, policy: ApiPolicy) -> None:
    source = "{type: pds, hosts: ['https://pds.example', 'https://internal.example']}"
    problems = refused(load(root, source=source), policy)  # hosts are sorted on loading
    assert list(problems) == ["backfill.source.hosts[0]"]


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        (
            {"source": "{type: s3, uri: s3://bucket/dids.csv, endpoint_url: 'http://HOST:9000'}"},
            "backfill.source.endpoint_url",
        ),
        (
            {"storage": "{type: s3, path: s3://bkt/p, endpoint_url: 'http://HOST', work_dir: w}"},
            "backfill.storage.endpoint_url",
        ),
        (
            {"storage": "{type: dynamodb, endpoint_url: 'http://HOST:8000', work_dir: w}"},
            "backfill.storage.endpoint_url",
        ),
        (
            {"monitoring": "{alert_webhook_url: 'https://HOST/hook?token=t'}"},
            "backfill.monitoring.alert_webhook_url",
        ),
    ],
)
def test_endpoint_urls_are_checked(
    sections: dict[str, str], key: str, root: Path, policy: ApiPolicy
) -> None:
    private = {name: text.replace("HOST", "internal.example") for name, text in sections.items()}
    assert list(refused(load(root, **private), policy)) == [key]
    public = {name: text.replace("HOST", "public.example") for name, text in sections.items()}
    check_api_config(load(root, **public), policy)


def test_each_host_is_resolved_once(root: Path) -> None:
    lookups: list[str] = []

    def counting(host: str) -> list[str]:
        lookups.append(host)
        return fake_resolve(host)

    config = load(
        root,
        identity="{plc_url: 'https://internal.example'}",
        monitoring="{alert_webhook_url: 'https://internal.example:8443/hook'}",
    )
    problems = refused(config, ApiPolicy((root,), resolve=counting))
    assert set(problems) == {PLC_KEY, "backfill.monitoring.alert_webhook_url"}
    assert lookups == ["internal.example"]


def test_every_problem_is_reported_together(root: Path, outside: Path, policy: ApiPolicy) -> None:
    config = load(
        root,
        source="{type: pds, hosts: ['https://nowhere.example', 'http://127.0.0.1:2583']}",
        filters=f"{{subject_uris: {{path: {outside / 'uris.parquet'}}}}}",
        identity="{plc_url: 'http://169.254.169.254'}",
        network="{allow_private_addresses: true}",
        storage='{type: parquet, path: "../out"}',
    )
    with pytest.raises(ConfigProblems) as info:
        check_api_config(config, policy)
    keys = [p.key for p in info.value.problems]
    assert set(keys) == {
        "backfill.filters.subject_uris.path",
        STORAGE_PATH,
        FLAG_KEY,
        PLC_KEY,
        "backfill.source.hosts[0]",
        "backfill.source.hosts[1]",
    }
    assert len(str(info.value).splitlines()) == len(keys)


# --- the default resolver and the size cap -----------------------------------------------


def test_the_default_resolver_is_getaddrinfo(root: Path) -> None:
    assert ApiPolicy((root,)).resolve is resolve_host
    assert resolve_host("127.0.0.1") == ["127.0.0.1"]  # numeric: no lookup leaves the machine


def test_the_size_cap() -> None:
    assert MAX_CONFIG_BYTES == 256 * 1024
    check_config_size("a" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match=f"is over {MAX_CONFIG_BYTES} bytes"):
        check_config_size("a" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError):  # fewer characters than the cap, more bytes
        check_config_size("é" * (MAX_CONFIG_BYTES // 2 + 1))


# --- property: containment is decided by where a path really is --------------------------


def _lexically_inside(joined: str, root: Path) -> bool:
    """An independent oracle for symlink-free paths: collapse '.' and '..' by hand."""
    parts: list[str] = []
    for part in joined.split("/"):
        if part == "..":
            parts = parts[:-1]
        elif part not in ("", "."):
            parts.append(part)
    root_parts = list(root.parts[1:])
    return parts[: len(root_parts)] == root_parts


@pytest.fixture(scope="module")
def property_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # realpath: the oracle assumes no symlinks on the way to the root either.
    return tmp_path_factory.mktemp("property").resolve() / "root"


def segments(root: Path) -> st.SearchStrategy[list[str]]:
    names = ["..", ".", "", "aa", "bb", root.name, root.parent.name]
    return st.lists(st.sampled_from(names), min_size=1, max_size=10)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), raw=st.booleans())
def test_paths_under_a_root_pass_exactly_when_they_resolve_inside(
    property_root: Path, data: st.DataObject, raw: bool
) -> None:
    property_root.mkdir(exist_ok=True)
    joined = f"{property_root}/" + "/".join(data.draw(segments(property_root)))
    config = load(property_root, storage=f'{{type: parquet, path: "{joined}"}}')
    if raw:  # as the path is written, without the loader's lexical normalisation
        storage = ParquetStorage.model_construct(type="parquet", path=Path(joined))
        config = config.model_copy(update={"storage": storage})
    policy = ApiPolicy((property_root,), resolve=fake_resolve)
    if _lexically_inside(joined, property_root):
        check_api_config(config, policy)
    else:
        assert list(refused(config, policy)) == [STORAGE_PATH]
