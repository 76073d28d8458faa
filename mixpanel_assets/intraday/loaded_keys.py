"""The record keys an open day's earlier loads made live, kept on disk in sorted runs.

Each load writes the keys (``_id`` digests) of the records it loaded, with their tags (the
mapping's dedup key and line number), as runs of at most ``RUN_KEYS`` entries sorted by key: the
8-byte key prefixes first (native ``uint64``), then the entries. A later load looks its keys up
with a binary search in each run through a memory map, so its work grows with its own size and
the log of the day's, and memory stays flat however big the day is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from mixpanel_assets.xdm.seen_keys import KEY_BYTES

RUN_KEYS = 1 << 19
_PREFIX_BYTES = 8


class KeySet(Protocol):
    """A set of dedup keys that answers, for each key added, the tag of an earlier sighting."""

    def add_all(self, keys: list[bytes], tags: list[bytes]) -> list[bytes | None]:
        """Add ``keys``; for each, the tag of its earlier sighting, or None when new."""
        ...

    def close(self) -> None:
        """Release the set's files and memory."""
        ...


class RunWriter:
    """Writes (key, tag) entries as sorted run files ``<stem>-NNNN.keys`` in ``folder``.

    Entries wait in two flat buffers (72 bytes an entry), at most ``RUN_KEYS`` of them.
    """

    def __init__(self, folder: Path, stem: str, tag_bytes: int) -> None:
        self._folder = folder
        self._stem = stem
        self._tag_bytes = tag_bytes
        self._keys = bytearray()
        self._tags = bytearray()
        self.paths: list[Path] = []
        self.count = 0

    def add(self, keys: Sequence[bytes], tags: Sequence[bytes]) -> None:
        """Add entries, writing a run file whenever the buffers are full."""
        self._keys += b"".join(keys)
        self._tags += b"".join(tags)
        self.count += len(keys)
        if len(self._keys) >= RUN_KEYS * KEY_BYTES:
            self._flush()

    def finish(self) -> list[Path]:
        """Write what is buffered; every run file written."""
        if self._keys:
            self._flush()
        return self.paths

    def _flush(self) -> None:
        joined = bytes(self._keys)
        words = np.frombuffer(joined, ">u8").reshape(-1, KEY_BYTES // 8)
        order = np.lexsort(words.T[::-1])
        entries = np.empty(len(order), [("key", f"V{KEY_BYTES}"), ("tag", f"V{self._tag_bytes}")])
        entries["key"] = np.frombuffer(joined, f"V{KEY_BYTES}")[order]
        if self._tag_bytes:
            entries["tag"] = np.frombuffer(bytes(self._tags), f"V{self._tag_bytes}")[order]
        path = self._folder / f"{self._stem}-{len(self.paths):04d}.keys"
        with path.open("wb") as file:
            file.write(words[order, 0].astype("<u8").tobytes())
            file.write(entries.tobytes())
        self.paths.append(path)
        self._keys, self._tags = bytearray(), bytearray()


class LoadedKeys:
    """The keys of run files written by ``RunWriter``, looked up without reading them whole."""

    def __init__(self, paths: Iterable[Path], tag_bytes: int) -> None:
        self._tag_bytes = tag_bytes
        entry = KEY_BYTES + tag_bytes
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        for path in paths:
            size = path.stat().st_size
            count, rest = divmod(size, _PREFIX_BYTES + entry)
            if rest:
                raise ValueError(f"{path} is not a run of loaded keys (size {size})")
            if count:
                prefixes = np.memmap(path, "<u8", "r", shape=(count,))
                entries = np.memmap(path, f"V{entry}", "r", _PREFIX_BYTES * count, (count,))
                self._runs.append((prefixes, entries))

    def find(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """The tags of those ``keys`` an earlier load holds."""
        found: dict[bytes, bytes] = {}
        if not keys or not self._runs:
            return found
        wanted = np.frombuffer(b"".join(keys), ">u8").reshape(-1, KEY_BYTES // 8)[:, 0]
        wanted = wanted.astype("<u8")
        for prefixes, entries in self._runs:
            starts = np.searchsorted(prefixes, wanted, "left")
            stops = np.searchsorted(prefixes, wanted, "right")
            for index in np.flatnonzero(stops > starts):
                key = keys[index]
                for position in range(int(starts[index]), int(stops[index])):
                    entry = entries[position].tobytes()
                    if entry[:KEY_BYTES] == key:
                        found.setdefault(key, entry[KEY_BYTES:])
                        break
        return found


class SeededKeys:
    """A day's ``SeenKeys`` that also knows the keys of the day's earlier loads.

    The keys it sees first (the records this load writes) go to ``writer``.
    """

    def __init__(self, seen: KeySet, earlier: LoadedKeys, writer: RunWriter) -> None:
        self._seen = seen
        self._earlier = earlier
        self._writer = writer

    def add_all(self, keys: list[bytes], tags: list[bytes]) -> list[bytes | None]:
        """Add ``keys``; for each, the tag of its earlier sighting, or None when new."""
        answers = self._seen.add_all(keys, tags)
        earlier = self._earlier.find(
            [key for key, answer in zip(keys, answers, strict=True) if answer is None]
        )
        if earlier:
            answers = [
                earlier.get(key) if answer is None else answer
                for key, answer in zip(keys, answers, strict=True)
            ]
        new = [index for index, answer in enumerate(answers) if answer is None]
        self._writer.add([keys[index] for index in new], [tags[index] for index in new])
        return answers

    def close(self) -> None:
        """Release the set's files and memory."""
        self._seen.close()
