"""Partition files under MIXPANEL_ASSETS_DATA_DIR (a local path or any fsspec URL).

A partition is ``<data dir>/[<project>/]<asset>/<partition key>/``: data files and the
``manifest.json`` naming them. Files go in under fresh names, then the manifest is replaced in one
step, so readers see the previous complete partition or the new one, on any machine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import fsspec
from dagster import ConfigurableResource
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem
from pydantic import Field

from mixpanel_assets.coordination import Coordinator, coordinator
from mixpanel_assets.redaction import redact_text, redact_url
from mixpanel_assets.settings import ConfigError

MANIFEST = "manifest.json"
DATA_DIR_VARIABLE = "MIXPANEL_ASSETS_DATA_DIR"
SCRATCH_DIR_VARIABLE = "MIXPANEL_ASSETS_SCRATCH_DIR"
# The extra that installs each object store's fsspec filesystem.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "abfs": "azure", "az": "azure"}


class PartitionMissingError(FileNotFoundError):
    """An upstream partition has not been materialized (or its files are gone)."""


@dataclass(frozen=True)
class FileStore:
    """A folder on the local disk or on object storage, seen through fsspec.

    Local folders move files in with ``os.replace`` (staging lives inside the folder, on the same
    disk); remote ones upload them from local scratch, streamed in parts by the filesystem.
    """

    fs: AbstractFileSystem
    root: str
    scratch_dir: str = ""

    @property
    def is_local(self) -> bool:
        """Whether the files are on a local disk."""
        return isinstance(self.fs, LocalFileSystem)

    def child(self, name: str) -> FileStore:
        """The store of the folder ``name`` inside this one."""
        return FileStore(self.fs, self._path(name), self.scratch_dir)

    def location(self, name: str = "") -> str:
        """Where ``name`` is, for people: a local path, or the object's URL."""
        path = self._path(name) if name else self.root
        return path if self.is_local else redact_url(self.fs.unstrip_protocol(path))

    def read_bytes(self, name: str) -> bytes:
        """The whole file ``name``."""
        return self.fs.cat_file(self._path(name))

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a small file whole: nobody sees it half written."""
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)
            temporary = Path(self.root) / f".{name}.{uuid.uuid4().hex[:12]}"
            temporary.write_bytes(data)
            os.replace(temporary, self._path(name))
        else:
            self.fs.pipe_file(self._path(name), data)

    def put(self, source: Path, name: str) -> None:
        """Move (local) or upload (remote) a finished local file in as ``name``."""
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)
            os.replace(source, self._path(name))
        else:
            self.fs.put_file(str(source), self._path(name))

    def take(self, name: str, destination: Path) -> None:
        """Move ``name`` out of the store into a local file."""
        if self.is_local:
            os.replace(self._path(name), destination)
        else:
            self.fs.get_file(self._path(name), str(destination))
            self.remove(name)

    def open(self, name: str) -> IO[bytes]:
        """A streaming reader: object stores are read in blocks, never whole."""
        return self.fs.open(self._path(name), "rb")

    @contextmanager
    def local_copy(self, name: str) -> Iterator[Path]:
        """``name`` as a local file of its own for the block, gone afterwards.

        On a disk it is a hard link (no copying): a newer run of the partition that replaces the
        file meanwhile unlinks only its own name, so this block reads the version it asked for.
        """
        with self.scratch() as folder:
            copy = folder / name
            try:
                if self.is_local:
                    os.link(self._path(name), copy)
                else:
                    self.fs.get_file(self._path(name), str(copy))
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"{self.location(name)} is gone: a newer run of this partition replaced it "
                    "after this run read the manifest. Another run of the same partition is (or "
                    "just was) running; run this one again once it is done."
                ) from None
            yield copy

    def exists(self, name: str) -> bool:
        """Whether the file ``name`` exists."""
        return self.fs.exists(self._path(name))

    def remove(self, name: str) -> None:
        """Remove the file ``name`` if it exists."""
        with suppress(FileNotFoundError):
            self.fs.rm_file(self._path(name))

    def remove_tree(self) -> None:
        """Remove this store's folder and everything in it."""
        with suppress(FileNotFoundError):
            self.fs.rm(self.root, recursive=True)

    def modified(self, name: str) -> float | None:
        """Epoch seconds ``name`` was last written, None when it is gone."""
        try:
            return self.fs.modified(self._path(name)).timestamp()
        except FileNotFoundError:
            return None

    def children(self, prefix: str) -> list[FileStore]:
        """The sub-folders whose names start with ``prefix``."""
        try:
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return []
        return [
            FileStore(self.fs, entry["name"].rstrip("/"), self.scratch_dir)
            for entry in entries
            if entry["type"] == "directory"
            and entry["name"].rstrip("/").rsplit("/", 1)[-1].startswith(prefix)
        ]

    def names(self) -> list[str]:
        """The names of the entries in this store's folder (none if it does not exist)."""
        try:
            return [path.rsplit("/", 1)[-1] for path in self.fs.ls(self.root, detail=False)]
        except FileNotFoundError:
            return []

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """A private local folder, removed whatever happens."""
        if self.is_local:
            folder = Path(self.root) / f".staging-{uuid.uuid4().hex}"
            folder.mkdir(parents=True)
        else:
            if self.scratch_dir:
                os.makedirs(self.scratch_dir, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="mixpanel-assets-", dir=self.scratch_dir or None))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"


@dataclass(frozen=True)
class PartitionFolder:
    """One asset partition's folder: its manifest and the data files the manifest names."""

    store: FileStore
    asset: str

    def manifest(self) -> dict[str, Any]:
        """The partition's manifest; ``PartitionMissingError`` when it has none."""
        try:
            return json.loads(self.store.read_bytes(MANIFEST))
        except FileNotFoundError:
            raise PartitionMissingError(
                f"{self.store.location()} has no {MANIFEST}: materialize this partition of "
                f"{self.asset} first."
            ) from None

    def location(self, role: str, manifest: dict[str, Any] | None = None) -> str:
        """Where the manifest's file for ``role`` is, for people."""
        return self.store.location(self._name(role, manifest))

    def open(self, role: str, manifest: dict[str, Any] | None = None) -> IO[bytes]:
        """A streaming reader of the manifest's file for ``role``."""
        return self.store.open(self._name(role, manifest))

    def local_copy(
        self, role: str, manifest: dict[str, Any] | None = None
    ) -> AbstractContextManager[Path]:
        """The file of ``role`` (as named by ``manifest``, else the current one) on local disk."""
        return self.store.local_copy(self._name(role, manifest))

    def staging(self) -> AbstractContextManager[Path]:
        """A private local folder to write the next version in; removed whatever happens."""
        return self.store.scratch()

    def publish(self, staged: dict[str, Path], manifest: dict[str, Any]) -> dict[str, Any]:
        """Put the staged files in and switch the manifest to them; drop the old files."""
        token = uuid.uuid4().hex[:12]
        names = {role: f"{token}-{source.name}" for role, source in staged.items()}
        for role, source in staged.items():
            self.store.put(source, names[role])
        previous = self._current_files()
        full_manifest = {**manifest, "files": names}
        self.store.write_bytes(
            MANIFEST, json.dumps(full_manifest, indent=2, default=str).encode("utf-8")
        )
        for name in previous - set(names.values()):
            self.store.remove(name)
        return full_manifest

    def _name(self, role: str, manifest: dict[str, Any] | None) -> str:
        return (manifest or self.manifest())["files"][role]

    def _current_files(self) -> set[str]:
        try:
            return set(self.manifest()["files"].values())
        except PartitionMissingError:
            return set()


class PartitionFiles(ConfigurableResource):
    """Where partition files live, and how runs of them take turns."""

    data_dir: str = Field(
        default="./data",
        description="MIXPANEL_ASSETS_DATA_DIR: a local path or an fsspec URL (s3://, gs://, abfs://)",
    )
    scratch_dir: str = Field(
        default="",
        description="MIXPANEL_ASSETS_SCRATCH_DIR: local folder for files on their way to or from "
        "object storage; empty means the temp dir",
    )
    coordination_url: str = Field(
        default="",
        description="MIXPANEL_ASSETS_COORDINATION_URL: PostgreSQL for locks across machines; "
        "empty means lock files under $DAGSTER_HOME (one machine)",
    )
    project: str = Field(
        default="",
        description="A project of MIXPANEL_ASSETS_PROJECTS: its files live under "
        "<data dir>/<project>/; empty for the single project",
    )

    def asset_store(self, asset: str) -> FileStore:
        """The store of ``asset``'s partitions; a clear error when the data dir is unusable."""
        try:
            fs, root = fsspec.core.url_to_fs(self.data_dir)
        except (ImportError, ValueError) as problem:
            protocol = self.data_dir.split("://", 1)[0]
            extra = _EXTRAS.get(protocol)
            hint = (
                f"install the project's `{extra}` extra, which adds its filesystem "
                f"(pip install -e '.[{extra}]' in the project's folder)"
                if extra
                else "use a local path or an s3://, gs:// or abfs:// URL"
            )
            raise ConfigError(
                f"{DATA_DIR_VARIABLE}={redact_url(self.data_dir)!r} cannot be opened "
                f"({redact_text(str(problem), (self.data_dir,))}): {hint}."
            ) from None
        folder = f"{self.project}/{asset}" if self.project else asset
        return FileStore(fs, f"{root.rstrip('/')}/{folder}", self.scratch_dir)

    def folder(self, asset: str, partition_key: str) -> PartitionFolder:
        """The folder of one partition of ``asset``."""
        return PartitionFolder(self.asset_store(asset).child(partition_key), asset)

    def coordinator(self) -> Coordinator:
        """The coordination backend of MIXPANEL_ASSETS_COORDINATION_URL."""
        return coordinator(self.coordination_url)

    def check_usable(self) -> None:
        """Write and remove a small file in the data dir (and the scratch dir, for object storage).

        A run learns at once, naming the variable, that it could not keep its work.
        """
        store = self.asset_store("")
        probe = f".usable-{uuid.uuid4().hex[:12]}"
        try:
            store.write_bytes(probe, b"")
            store.remove(probe)
        except Exception as problem:  # whatever the filesystem raises: not usable, say why
            raise ConfigError(
                f"{DATA_DIR_VARIABLE}={redact_url(self.data_dir)!r} is not usable: writing "
                f"{redact_url(store.location(probe))} failed "
                f"({type(problem).__name__}: {redact_text(str(problem), (self.data_dir,))}). "
                "Point it at a folder (or bucket prefix) this run may write to."
            ) from None
        if store.is_local or not self.scratch_dir:
            return
        try:
            os.makedirs(self.scratch_dir, exist_ok=True)
            tempfile.TemporaryFile(dir=self.scratch_dir).close()
        except OSError as problem:
            raise ConfigError(
                f"{SCRATCH_DIR_VARIABLE}={self.scratch_dir!r} is not usable ({problem}): point "
                "it at a local folder this run may write to, or leave it empty for the temp dir."
            ) from None
