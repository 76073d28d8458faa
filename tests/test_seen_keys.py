"""The day's key set answers exactly as a dict would, across spills to disk, for keys that share
long prefixes (one index block is not enough) and keys the filters were not made for."""

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixpanel_assets.xdm.seen_keys import KEY_BYTES, SeenKeys

# Keys from a small pool, so batches repeat keys already spilled, in memory or in the same call.
# Half are digests; half share one of three 8-byte prefixes and differ only at the end, which
# puts many equal index entries in a run and weakens the filters (more disk reads, same answers).
DIGESTS = [hashlib.sha256(bytes([number])).digest() for number in range(40)]
CRAFTED = [
    bytes([prefix]) * 8 + number.to_bytes(KEY_BYTES - 8, "big")
    for prefix in range(3)
    for number in range(100)
]
POOL = DIGESTS + CRAFTED


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(st.lists(st.sampled_from(POOL), max_size=80), max_size=12),
    spill_keys=st.sampled_from([1, 2, 7, 90, 1000]),
    filter_bits=st.sampled_from([1 << 6, 1 << 27]),  # a tiny filter: more disk reads, same answers
)
def test_answers_as_a_dict_would(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[list[bytes]],
    spill_keys: int,
    filter_bits: int,
) -> None:
    seen = SeenKeys(
        tmp_path_factory.mktemp("seen") / "keys",
        tag_bytes=8,
        spill_keys=spill_keys,
        filter_bits=filter_bits,
    )
    model: dict[bytes, bytes] = {}
    line = 0
    try:
        for batch in batches:
            tags = []
            expected = []
            for key in batch:
                line += 1
                tag = line.to_bytes(8, "big")
                tags.append(tag)
                expected.append(model.get(key))
                model.setdefault(key, tag)
            assert seen.add_all(batch, tags) == expected
    finally:
        seen.close()


def test_keys_without_tags_still_say_they_came_before(tmp_path: Path) -> None:
    seen = SeenKeys(tmp_path / "keys", tag_bytes=0, spill_keys=2)
    try:
        answers = [seen.add(key, b"") for key in [*DIGESTS[:5], DIGESTS[0], DIGESTS[4]]]
    finally:
        seen.close()
    assert answers == [None] * 5 + [b"", b""]


def test_a_key_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    seen = SeenKeys(tmp_path / "keys", tag_bytes=8)
    try:
        with pytest.raises(ValueError, match="32-byte digests and tags 8 bytes"):
            seen.add(b"short", bytes(8))
    finally:
        seen.close()


def test_keys_sharing_their_first_bytes_are_found_across_index_blocks(tmp_path: Path) -> None:
    same_start = [bytes(8) + number.to_bytes(KEY_BYTES - 8, "big") for number in range(300)]
    seen = SeenKeys(tmp_path / "keys", tag_bytes=2, spill_keys=300)
    try:
        tags = [number.to_bytes(2, "big") for number in range(300)]
        assert seen.add_all(same_start, tags) == [None] * 300  # now one run on disk
        assert seen.add_all(same_start[::-1], [b"xx"] * 300) == tags[::-1]
    finally:
        seen.close()
