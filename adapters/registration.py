"""Registration: source -> staged copy -> validation -> base model match -> store -> registry.

Nothing is written to the registry until every rule passed; a refused adapter leaves the
store without new files and the database untouched.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorafleet.adapters.base_models import ModelInfo
from lorafleet.adapters.registry import AdapterRegistry, AdapterVersion
from lorafleet.adapters.sources import (
    MANIFEST_NAMES,
    SourceError,
    SourcePolicy,
    commit_to_store,
    fetch_source,
    stage_copy,
)
from lorafleet.adapters.validation import (
    AdapterFacts,
    AdapterValidationError,
    strict_json_loads,
    validate_adapter_dir,
)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ServedBase:
    """A base model this gateway serves: its id and its architecture facts."""

    model_id: str
    info: ModelInfo
    aliases: frozenset[str] = frozenset()  # other names it goes by (HF id, path)
    max_rank: int | None = None  # its engines' --max-lora-rank, when it differs from the rules'

    def matches(self, name: str | None) -> bool:
        if not name:
            return False
        candidates = {self.model_id, str(self.info.path), *self.aliases}
        return name in candidates or name.rstrip("/").rsplit("/", 1)[-1] in candidates


@dataclass(frozen=True)
class RegistrationRules:
    policy: SourcePolicy
    store: Path
    bases: tuple[ServedBase, ...]
    max_rank: int


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise AdapterValidationError(
            "adapter name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
            "invalid_name",
        )


def register_adapter(
    registry: AdapterRegistry,
    rules: RegistrationRules,
    name: str,
    source: str,
    base_model: str | None = None,
) -> AdapterVersion:
    """Validate and store the adapter at `source`, then record it as `name`'s newest version."""
    check_name(name)
    if any(base.model_id == name for base in rules.bases):
        raise AdapterValidationError(f"{name!r} is a base model id", "invalid_name")
    scratch = rules.store / ".scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    fetched = fetch_source(source, rules.policy, scratch)
    staging: Path | None = None
    try:
        base = _pick_base(rules.bases, base_model, fetched.path)
        max_rank = base.max_rank or rules.max_rank
        # First pass on the source itself: it alone can see stray pickle files.
        validate_adapter_dir(fetched.path, base=base.info, max_rank=max_rank)
        staging = stage_copy(fetched.path, rules.store)
        facts = validate_adapter_dir(staging, base=base.info, max_rank=max_rank)
        manifest = _read_manifest(staging)
        stored = commit_to_store(staging, rules.store, facts.sha256)
        staging = None
        return registry.register(
            name,
            facts=facts,
            source=source,
            path=str(stored),
            base_model=base.model_id,
            manifest=manifest,
        )
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if fetched.temporary:
            shutil.rmtree(fetched.path, ignore_errors=True)


def _pick_base(bases: tuple[ServedBase, ...], explicit: str | None, path: Path) -> ServedBase:
    """The explicit `base_model` wins; otherwise the adapter's `base_model_name_or_path`."""
    if explicit is not None:
        for base in bases:
            if base.model_id == explicit:
                return base
        raise AdapterValidationError(
            f"base_model {explicit!r} is not served here (served: "
            f"{', '.join(b.model_id for b in bases)})",
            "base_model_mismatch",
        )
    declared = _declared_base(path)
    for base in bases:
        if base.matches(declared):
            return base
    if len(bases) == 1 and not declared:
        return bases[0]
    raise AdapterValidationError(
        f"the adapter was trained on {declared!r}, which is not a served base model; pass "
        f"base_model explicitly if it is the same model under another name",
        "base_model_mismatch",
    )


def _declared_base(path: Path) -> str | None:
    try:
        config = json.loads((path / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None  # validation reports the missing or broken config
    value = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    return value if isinstance(value, str) and value else None


def _read_manifest(path: Path) -> dict[str, Any] | None:
    for name in MANIFEST_NAMES:
        file = path / name
        if file.is_file():
            try:
                data = strict_json_loads(file.read_text())
            except (OSError, ValueError) as exc:
                raise AdapterValidationError(
                    f"{name} is not valid JSON: {exc}", "bad_manifest"
                ) from exc
            return data if isinstance(data, dict) else None
    return None


__all__ = [
    "AdapterFacts",
    "AdapterValidationError",
    "RegistrationRules",
    "ServedBase",
    "SourceError",
    "check_name",
    "register_adapter",
]
