"""Partition files under MIXPANEL_ASSETS_DATA_DIR, published atomically.

Each asset partition is a folder ``<data dir>/<asset>/<partition key>/`` holding data files and a
``manifest.json`` that names them. A run writes into a private staging folder, then moves the
files in under fresh names and replaces the manifest in one ``os.replace``: readers only ever see
the previous complete partition or the new complete one, never a half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource

from mixpanel_assets.file_lock import exclusive_lock

MANIFEST = "manifest.json"


class PartitionMissingError(FileNotFoundError):
    """An upstream partition has not been materialized (or its files are gone)."""


@dataclass(frozen=True)
class PartitionFolder:
    """One asset partition's folder: its manifest and the data files the manifest names."""

    path: Path

    def manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PartitionMissingError(
                f"{self.path} has no {MANIFEST}: materialize this partition of "
                f"{self.path.parent.name} first."
            ) from None

    def file(self, role: str) -> Path:
        return self.path / self.manifest()["files"][role]

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Keep other runs of this partition out while the block runs."""
        with exclusive_lock(self.path / ".lock"):
            yield

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A private folder to write the next version in; removed whatever happens."""
        staging = self.path / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def publish(self, staged: dict[str, Path], manifest: dict[str, Any]) -> dict[str, Any]:
        """Move the staged files in and switch the manifest to them; drop the old files."""
        token = uuid.uuid4().hex[:12]
        names = {role: f"{token}-{source.name}" for role, source in staged.items()}
        for role, source in staged.items():
            os.replace(source, self.path / names[role])
        previous = self._current_files()
        full_manifest = {**manifest, "files": names}
        temporary = self.path / f".{MANIFEST}.{token}"
        temporary.write_text(json.dumps(full_manifest, indent=2, default=str), encoding="utf-8")
        os.replace(temporary, self.path / MANIFEST)
        for name in previous - set(names.values()):
            (self.path / name).unlink(missing_ok=True)
        return full_manifest

    def _current_files(self) -> set[str]:
        try:
            return set(self.manifest()["files"].values())
        except PartitionMissingError:
            return set()


class PartitionFiles(ConfigurableResource):
    """Where partition files live (MIXPANEL_ASSETS_DATA_DIR)."""

    data_dir: str = "./data"

    def asset_dir(self, asset: str) -> Path:
        return Path(self.data_dir).resolve() / asset

    def folder(self, asset: str, partition_key: str) -> PartitionFolder:
        return PartitionFolder(self.asset_dir(asset) / partition_key)
