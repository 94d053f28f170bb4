from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bsky_backfill.errors import ConfigError
from bsky_backfill.sources.files import read_did_file

DIDS = ["did:plc:aaaaaaaaaaaaaaaaaaaaaaaa", "did:web:example.com", "not a did"]


def write(tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / f"dids{suffix}"
    if suffix == ".txt":
        path.write_text("# study users\n\n" + "\n".join(f"  {d} " for d in DIDS) + "\n")
    elif suffix == ".csv":
        path.write_text("handle,did\n" + "".join(f"h{i},{d}\n" for i, d in enumerate(DIDS)))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps({"did": d, "n": i}) + "\n" for i, d in enumerate(DIDS)))
    else:
        pq.write_table(pa.table({"did": DIDS, "n": [1, 2, 3]}), path)
    return path


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl", ".parquet"])
def test_every_format_yields_the_values_in_order(tmp_path: Path, suffix: str) -> None:
    assert list(read_did_file(write(tmp_path, suffix))) == DIDS


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_named_column_is_read(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path, suffix)
    if suffix == ".jsonl":
        assert list(read_did_file(path, column="n")) == []  # not strings: nothing to yield
    else:
        with pytest.raises(ConfigError, match="no column 'author'"):
            list(read_did_file(path, column="author"))


def test_a_missing_or_unknown_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_did_file(tmp_path / "nope.txt")
    (tmp_path / "dids.xlsx").write_text("x")
    with pytest.raises(ConfigError, match="unknown type"):
        read_did_file(tmp_path / "dids.xlsx")


def test_a_bad_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"did": "did:plc:x"}\n[1]\n')
    with pytest.raises(ConfigError, match=r"d\.jsonl:2: expected a JSON object"):
        list(read_did_file(path))
