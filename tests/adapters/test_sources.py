"""The adapter store: what is committed is on disk, and crashed registrations leave nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lorafleet.adapters.sources import clean_store_temporaries, commit_to_store, stage_copy
from lorafleet.adapters.validation import CONFIG_NAME, WEIGHTS_NAME


def adapter_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / CONFIG_NAME).write_text("{}")
    (path / WEIGHTS_NAME).write_bytes(b"weights")
    return path


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_committed_files_their_directory_and_the_store_are_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    staging = stage_copy(adapter_dir(tmp_path / "src"), store)
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    target = commit_to_store(staging, store, "ab" * 32)
    assert (target / WEIGHTS_NAME).read_bytes() == b"weights"
    assert str(staging / WEIGHTS_NAME) in synced and str(staging / CONFIG_NAME) in synced
    assert str(staging) in synced  # the directory entry of each file
    assert synced[-1] == str(store)  # the rename itself


def test_only_stale_temporaries_are_removed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    kept_version = adapter_dir(store / ("cd" * 32))
    stale_incoming = adapter_dir(store / ".incoming-old")
    fresh_incoming = adapter_dir(store / ".incoming-new")  # another replica, registering now
    stale_download = adapter_dir(store / ".scratch" / "hf-old")
    for path in (stale_incoming, stale_download, kept_version):
        age(path, 2 * 3600)
    removed = clean_store_temporaries(store)
    assert sorted(removed) == sorted([stale_incoming, stale_download])
    assert kept_version.exists() and fresh_incoming.exists()
    assert not stale_incoming.exists() and not stale_download.exists()
