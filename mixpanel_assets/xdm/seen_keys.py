"""The set of a day's record keys, each with a tag: exact, steady and small in memory.

Design notes: docs/design-notes.md, `xdm/seen_keys.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

KEY_BYTES = 32
# Keys between two entries of a run's in-memory index: one disk read of 2 KiB finds a key.
_INDEX_EVERY = 64
# One filter for every run: 2^27 bits (16 MiB), so a few false alarms in a million at 5M keys.
_FILTER_BITS = 1 << 27
# Each run's own filter, 2^20 bits (128 KiB, 16 per key), says which run to read once the big
# one fires. They are kept _RUNS_PER_BLOCK to an array: tested a block at a time, and added to
# without copying the others.
_RUN_FILTER_BITS = 1 << 20
_RUNS_PER_BLOCK = 16


class _Run(NamedTuple):
    offset: int  # where its sorted keys start in the file; their tags follow them
    count: int
    index: np.ndarray  # the first 8 bytes (big-endian) of every _INDEX_EVERY-th key


class SeenKeys:
    """Keys seen so far, each with the tag it first came with."""

    def __init__(
        self,
        path: Path,
        *,
        tag_bytes: int,
        spill_keys: int = 1 << 16,
        filter_bits: int = _FILTER_BITS,
    ) -> None:
        """``filter_bits`` (a power of two) sizes the filter of every run: a smaller one costs
        less memory and, past about 8 bits a key, more runs read in vain."""
        self._file = open(path, "w+b")  # noqa: SIM115 (open for the object's life; close())
        self._end = 0
        self._tag_bytes = tag_bytes
        self._spill_keys = spill_keys
        self._recent: dict[bytes, bytes] = {}
        self._filter_mask = filter_bits - 1
        self._filter = np.zeros(filter_bits // 8, np.uint8)
        self._runs: list[_Run] = []
        self._run_filter_blocks: list[np.ndarray] = []  # run r's: row r % 16 of block r // 16

    def add(self, key: bytes, tag: bytes) -> bytes | None:
        """Record ``key`` with ``tag``; None when it is new, else the tag it first came with."""
        return self.add_all([key], [tag])[0]

    def add_all(self, keys: list[bytes], tags: list[bytes]) -> list[bytes | None]:
        """``add`` of every (key, tag) in order, with per-key work in C."""
        if set(map(len, keys)) - {KEY_BYTES} or set(map(len, tags)) - {self._tag_bytes}:
            raise ValueError(
                f"keys must be {KEY_BYTES}-byte digests and tags {self._tag_bytes} bytes long"
            )
        count = len(keys)
        # Each key's first index in this call (a later one is a repeat of it).
        first_index = dict(zip(reversed(keys), range(count - 1, -1, -1), strict=True))
        recent = self._recent
        earlier = {key: recent[key] for key in first_index.keys() & recent.keys()}
        unknown = [key for key in first_index if key not in recent]
        if unknown and self._runs:
            earlier.update(self._find_on_disk(unknown))
        recent.update((key, tags[first_index[key]]) for key in unknown if key not in earlier)
        if len(recent) >= self._spill_keys:
            self._spill()
        answers = list(map(earlier.get, keys))
        if len(first_index) < count:  # a repeat within the call: its first's answer, or tag
            for index, key in enumerate(keys):
                first = first_index[key]
                if first != index and answers[index] is None:
                    answers[index] = tags[first]
        return answers

    def close(self) -> None:
        self._file.close()

    def _find_on_disk(self, keys: list[bytes]) -> dict[bytes, bytes]:
        """The tags of those ``keys`` that are in a run."""
        words = np.frombuffer(b"".join(keys), "<u8").reshape(-1, 4)
        probable = np.flatnonzero(_all_set(self._filter, words & self._filter_mask))
        if not len(probable):
            return {}
        positions = (words[probable] >> 32) & (_RUN_FILTER_BITS - 1)
        found: dict[bytes, bytes] = {}
        for number, block in enumerate(self._run_filter_blocks):
            bits = block[:, positions >> 3] >> (positions & 7).astype(np.uint8)
            in_run = np.logical_and.reduce(bits & 1, axis=2)  # (block's runs, probable keys)
            for row, position in zip(*np.nonzero(in_run), strict=True):
                key = keys[probable[position]]
                run = self._runs[number * _RUNS_PER_BLOCK + row]
                if key not in found and (tag := self._read_tag(run, key)) is not None:
                    found[key] = tag
        return found

    def _read_tag(self, run: _Run, key: bytes) -> bytes | None:
        prefix = np.uint64(int.from_bytes(key[:8], "big"))
        # The blocks whose first key could be <= key: equal prefixes may span several.
        first = max(int(np.searchsorted(run.index, prefix, "left")) - 1, 0)
        last = max(int(np.searchsorted(run.index, prefix, "right")) - 1, 0)
        start, stop = first * _INDEX_EVERY, min((last + 1) * _INDEX_EVERY, run.count)
        block = os.pread(
            self._file.fileno(), (stop - start) * KEY_BYTES, run.offset + start * KEY_BYTES
        )
        at = block.find(key)
        while at != -1 and at % KEY_BYTES:  # a match straddling two keys is not one
            at = block.find(key, at + 1)
        if at == -1:
            return None
        number = start + at // KEY_BYTES
        tags_offset = run.offset + run.count * KEY_BYTES
        return os.pread(
            self._file.fileno(), self._tag_bytes, tags_offset + number * self._tag_bytes
        )

    def _spill(self) -> None:
        """The recent keys to disk as one sorted run; memory keeps its filter and index."""
        joined = b"".join(self._recent)
        columns = np.frombuffer(joined, ">u8").reshape(-1, 4)
        order = np.lexsort(columns.T[::-1])  # by the first word, then the next...
        keys = np.frombuffer(joined, f"V{KEY_BYTES}")[order]
        self._file.seek(self._end)
        self._file.write(keys.tobytes())
        if self._tag_bytes:
            tags = np.frombuffer(b"".join(self._recent.values()), f"V{self._tag_bytes}")
            self._file.write(tags[order].tobytes())
        self._file.flush()
        count = len(order)
        index = columns[order[::_INDEX_EVERY], 0].astype(np.uint64)
        self._runs.append(_Run(self._end, count, index))
        self._end += count * (KEY_BYTES + self._tag_bytes)
        words = np.frombuffer(joined, "<u8").reshape(-1, 4)
        _set(self._filter, words & self._filter_mask)
        block, row = divmod(len(self._runs) - 1, _RUNS_PER_BLOCK)
        if block == len(self._run_filter_blocks):
            # Rows not yet written take no memory (zeroed pages are only mapped when written).
            shape = (_RUNS_PER_BLOCK, _RUN_FILTER_BITS // 8)
            self._run_filter_blocks.append(np.zeros(shape, np.uint8))
        _set(self._run_filter_blocks[block][row], (words >> 32) & (_RUN_FILTER_BITS - 1))
        self._recent = {}


def _set(bits: np.ndarray, positions: np.ndarray) -> None:
    np.bitwise_or.at(bits, positions >> 3, np.left_shift(1, positions & 7).astype(np.uint8))


def _all_set(bits: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Per row of ``positions``: whether every bit it names is set."""
    shifted = bits[positions >> 3] >> (positions & 7).astype(np.uint8)
    return np.logical_and.reduce(shifted & 1, axis=1)
