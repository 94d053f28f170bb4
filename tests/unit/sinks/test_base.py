"""The interface's shared pieces: batch ids, OS error translation, the error's place."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from bsky_backfill.errors import RetryableError, StoreUnavailable
from bsky_backfill.sinks.base import SinkWriteFailed, check_batch_id, write_errors


@pytest.mark.parametrize("good", ["b1", "0", "job-1_batch-000042", "x" * 64])
def test_batch_ids_that_make_safe_file_names_pass(good: str) -> None:
    assert check_batch_id(good) == good


def test_a_write_failure_is_a_retryable_store_error() -> None:
    assert issubclass(SinkWriteFailed, StoreUnavailable)
    assert issubclass(SinkWriteFailed, RetryableError)


@pytest.mark.parametrize(
    ("raised", "path", "code", "message"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/d/f"),
            "/d/f",
            errno.ENOSPC,
            "cannot write the dataset at /d/f: No space left on device (ENOSPC)",
        ),
        (  # pyarrow's form: an errno but no file name
            OSError(errno.EROFS, "Error writing bytes to file. Detail: [errno 30] ..."),
            "/fallback",
            errno.EROFS,
            "cannot write the dataset at /fallback: Read-only file system (EROFS)",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/d/g"),
            "/d/g",
            errno.EACCES,
            "cannot write the dataset at /d/g: Permission denied (EACCES)",
        ),
        (OSError("no errno at all"), "/fallback", None, "/fallback: no errno at all"),
    ],
)
def test_os_errors_become_one_typed_error_naming_the_path(
    raised: OSError, path: str, code: int | None, message: str
) -> None:
    with pytest.raises(SinkWriteFailed) as failure, write_errors(Path("/fallback")):
        raise raised
    assert (failure.value.path, failure.value.errno) == (path, code)
    assert message in str(failure.value)
    assert failure.value.__cause__ is raised


def test_other_errors_pass_through_untouched() -> None:
    with pytest.raises(KeyError), write_errors(Path("/x")):
        raise KeyError("bug")
    inner = SinkWriteFailed("inner", path="/inner")
    with pytest.raises(SinkWriteFailed) as failure, write_errors(Path("/outer")):
        raise inner
    assert failure.value is inner
