"""Where adapters come from, and how they get into the registry's store.

A source string picks a handler by its scheme, from `SOURCE_HANDLERS` (no if/elif chains):

    /abs/dir or file:///abs/dir   a directory under an allowed root (symlinks resolved first)
    hf://org/repo[@revision]      the Hugging Face hub through huggingface_hub (offline: its cache)
    s3://bucket/prefix            S3 or a compatible store through boto3, where enabled

Whatever the source, the adapter's files are copied into a content-addressed store
(`<store>/<sha256>/`) after validation: a registered version is immutable even if its source
changes later, and engines load it from one path that gateway and engines share.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lorafleet.adapters.validation import CONFIG_NAME, WEIGHTS_NAME

log = logging.getLogger(__name__)

MANIFEST_NAMES = ("lorafleet-manifest.json",)
STORED_FILES = (CONFIG_NAME, WEIGHTS_NAME, *MANIFEST_NAMES)


class SourceError(ValueError):
    """The source cannot be used; `code` names why. Maps to a 4xx at the API."""

    def __init__(self, message: str, code: str = "invalid_source") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SourcePolicy:
    roots: tuple[Path, ...]  # allowed local roots, already resolved
    allow_hf: bool = True
    allow_s3: bool = False
    s3_endpoint_url: str | None = None


@dataclass(frozen=True)
class FetchedAdapter:
    path: Path  # a local directory holding the adapter's files
    temporary: bool  # True when `path` is a download the caller must delete


Handler = Callable[[str, SourcePolicy, Path], FetchedAdapter]


def fetch_source(source: str, policy: SourcePolicy, scratch: Path) -> FetchedAdapter:
    """Resolve `source` to a local directory (downloading into `scratch` when remote)."""
    scheme = urlparse(source).scheme if "://" in source else "file"
    handler = SOURCE_HANDLERS.get(scheme)
    if handler is None:
        raise SourceError(
            f"unsupported adapter source scheme {scheme!r}; use a directory, hf:// or s3://"
        )
    return handler(source, policy, scratch)


def _local(source: str, policy: SourcePolicy, scratch: Path) -> FetchedAdapter:
    raw = source.removeprefix("file://")
    if not os.path.isabs(raw):
        raise SourceError(f"adapter directory must be an absolute path, got {raw!r}")
    path = Path(raw).resolve()  # follows symlinks: the check below sees the real place
    if not any(path.is_relative_to(root) for root in policy.roots):
        raise SourceError(
            "adapter directory is outside the allowed roots (LORAFLEET_ADAPTER_ROOTS)",
            "path_not_allowed",
        )
    if not path.is_dir():
        raise SourceError(f"adapter directory {path} does not exist", "source_not_found")
    for name in STORED_FILES:
        file = path / name
        if file.exists() and not any(file.resolve().is_relative_to(r) for r in policy.roots):
            raise SourceError(
                f"{name} is a symlink that leaves the allowed roots", "path_not_allowed"
            )
    return FetchedAdapter(path, temporary=False)


def _huggingface(source: str, policy: SourcePolicy, scratch: Path) -> FetchedAdapter:
    if not policy.allow_hf:
        raise SourceError("hf:// sources are disabled on this gateway", "source_disabled")
    spec = source.removeprefix("hf://")
    repo, _, revision = spec.partition("@")
    if repo.count("/") != 1 or ".." in repo:
        raise SourceError(f"hf:// source must be hf://org/repo[@revision], got {source!r}")
    from huggingface_hub import snapshot_download

    target = Path(tempfile.mkdtemp(dir=scratch, prefix="hf-"))
    try:
        snapshot_download(
            repo,
            revision=revision or None,
            allow_patterns=[*STORED_FILES, "*.bin", "*.pt"],  # pickles: to refuse them
            local_dir=target,
        )
    except Exception as exc:  # huggingface_hub raises many types; all mean "unavailable"
        shutil.rmtree(target, ignore_errors=True)
        raise SourceError(
            f"could not fetch {source} from the hub or its local cache: {exc}", "source_not_found"
        ) from exc
    return FetchedAdapter(target, temporary=True)


def _s3(source: str, policy: SourcePolicy, scratch: Path) -> FetchedAdapter:
    if not policy.allow_s3:
        raise SourceError("s3:// sources are not enabled (LORAFLEET_S3_ENABLED)", "source_disabled")
    try:
        import boto3  # optional dependency: pip install 'lorafleet[s3]'
    except ImportError as exc:
        raise SourceError("s3:// sources need boto3 (pip install 'lorafleet[s3]')") from exc
    parsed = urlparse(source)
    prefix = parsed.path.strip("/")
    client = boto3.client("s3", endpoint_url=policy.s3_endpoint_url)
    target = Path(tempfile.mkdtemp(dir=scratch, prefix="s3-"))
    try:
        for name in STORED_FILES:
            key = f"{prefix}/{name}" if prefix else name
            try:
                client.download_file(parsed.netloc, key, str(target / name))
            except Exception:  # a missing manifest is fine; validation reports missing others
                continue
    except Exception as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise SourceError(f"could not fetch {source}: {exc}", "source_not_found") from exc
    return FetchedAdapter(target, temporary=True)


SOURCE_HANDLERS: dict[str, Handler] = {"file": _local, "hf": _huggingface, "s3": _s3}


def stage_copy(fetched: Path, store: Path) -> Path:
    """Copy the adapter's files into a private staging directory inside the store. Validation
    then reads the copy, so what is validated is exactly what engines will load."""
    store.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=store, prefix=".incoming-"))
    for name in STORED_FILES:
        if (fetched / name).is_file():
            shutil.copyfile(fetched / name, staging / name)
    return staging


def commit_to_store(staging: Path, store: Path, sha256: str) -> Path:
    """Move a validated staging copy to `<store>/<sha256>/` (atomic rename) and return it."""
    target = store / sha256
    if (target / WEIGHTS_NAME).is_file():  # identical content is already stored
        shutil.rmtree(staging, ignore_errors=True)
        return target
    staging.chmod(0o755)
    # The registry records the path once this returns: its bytes and its name must both be on
    # disk by then, or a power cut leaves a registered version with empty or missing files.
    for file in staging.iterdir():
        _fsync(file)
    _fsync(staging)
    try:
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / WEIGHTS_NAME).is_file():  # not just a lost race to an identical copy
            raise
    _fsync(store)
    return target


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


STALE_AFTER_S = 3600.0


def clean_store_temporaries(store: Path, older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove staging copies and downloads that a crashed registration left behind. Only old
    ones: replicas sharing the store may be registering right now."""
    candidates = [*store.glob(".incoming-*"), *store.glob(".scratch/*")]
    cutoff = time.time() - older_than_s
    removed = []
    for path in candidates:
        try:
            if path.lstat().st_mtime >= cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:  # gone already, or not ours to remove: the next start tries again
            continue
    if removed:
        log.info("removed %d stale temporary entries from %s", len(removed), store)
    return removed
