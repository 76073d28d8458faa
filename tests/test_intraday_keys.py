"""The keys an open day's loads made live: sorted runs on disk, found by binary search."""

import hashlib
from pathlib import Path

import pytest

from mixpanel_assets.intraday import loaded_keys
from mixpanel_assets.intraday.loaded_keys import LoadedKeys, RunWriter


def _key(number: int) -> bytes:
    return hashlib.sha256(str(number).encode()).digest()


def test_keys_of_several_runs_are_found_with_their_tags_and_others_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loaded_keys, "RUN_KEYS", 100)
    writer = RunWriter(tmp_path, "keys", tag_bytes=4)
    for start in range(0, 1000, 50):
        numbers = range(start, start + 50)
        writer.add([_key(n) for n in numbers], [n.to_bytes(4, "big") for n in numbers])
    # Two keys that share their first 8 bytes (the runs' index) but differ after.
    twin_a, twin_b = b"\x01" * 8 + b"\xaa" * 24, b"\x01" * 8 + b"\xbb" * 24
    writer.add([twin_a, twin_b], [b"AAAA", b"BBBB"])
    paths = writer.finish()
    assert len(paths) == 11 and writer.count == 1002
    found = LoadedKeys(paths, tag_bytes=4).find(
        [_key(7), _key(999), _key(1000), twin_b, twin_a, b"\x01" * 8 + b"\xcc" * 24]
    )
    assert found == {
        _key(7): (7).to_bytes(4, "big"),
        _key(999): (999).to_bytes(4, "big"),
        twin_a: b"AAAA",
        twin_b: b"BBBB",
    }


def test_a_file_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "broken.keys").write_bytes(b"x" * 13)
    with pytest.raises(ValueError, match="not a run of loaded keys"):
        LoadedKeys([tmp_path / "broken.keys"], tag_bytes=4)
