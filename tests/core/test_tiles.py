"""Tests of C2SP tlog-tiles: paths, tile data, authentication from tiles, entry bundles."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logserver.core import tiles, tlog
from logserver.core.errors import FormatError, UsageError, VerificationError
from logserver.core.tiles import Tile
from tests.core.test_tlog import KNOWN_ROOTS, STANDARD_LEAVES, NaiveTree, flip_bit, standard_store

# ----- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (Tile(0, 0), "tile/0/000"),
        (Tile(0, 1234067), "tile/0/x001/x234/067"),
        (Tile(0, 1000), "tile/0/x001/000"),
        (Tile(0, 999, 8), "tile/0/999.p/8"),
        (Tile(1, 17, 255), "tile/1/017.p/255"),
        (Tile(63, 0, 1), "tile/63/000.p/1"),
        (Tile(-1, 0), "tile/entries/000"),
        (Tile(-1, 1234067, 112), "tile/entries/x001/x234/067.p/112"),
        (Tile(0, 2**56 - 1), "tile/0/x072/x057/x594/x037/x927/935"),
    ],
)
def test_path_known_answers(tile: Tile, path: str) -> None:
    assert tiles.format_tile_path(tile) == tile.path == path
    assert tiles.parse_tile_path(path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile",
        "tile/",
        "tile/0",
        "tile/0/",
        "/tile/0/000",
        "tile/0/000/",
        "tile/0/000\n",
        " tile/0/000",
        "tile/00/000",
        "tile/01/000",
        "tile/64/000",
        "tile/100/000",
        "tile/-1/000",
        "tile/x/000",
        "tile/Entries/000",
        "tile/entries/0",
        "tile/0/0",
        "tile/0/00",
        "tile/0/0000",
        "tile/0/1234",
        "tile/0/x000/001",
        "tile/0/x000/x001/000",
        "tile/0/001/002",
        "tile/0/x001",
        "tile/0/x001/",
        "tile/0/X001/000",
        "tile/0/x1000/000",
        "tile/0/x01/000",
        "tile/0/000.p",
        "tile/0/000.p/",
        "tile/0/000.p/0",
        "tile/0/000.p/00",
        "tile/0/000.p/007",
        "tile/0/000.p/256",
        "tile/0/000.p/1000",
        "tile/0/000.p/-1",
        "tile/0/000.p/+1",
        "tile/0/000.P/1",
        "tile/0/000.p/1/",
        "tile/0/000.p/1.p/1",
        "tile/０/000",
        "tile/0/０００",
        "tile/0/٠٠٠",
        "tile/0/x072/x057/x594/x037/x927/936",  # the tile starting at record 2**64
        "tile/1/x281/x474/x976/710/656",  # 2**48 level-1 tiles start at 2**64
        "tile/7/001",  # 256**8 records is beyond 2**64
        "tile/0/" + "x001/" * 40 + "000",
    ],
)
def test_parse_rejects(path: str) -> None:
    with pytest.raises(FormatError):
        tiles.parse_tile_path(path)


@st.composite
def any_tile(draw: st.DrawFn) -> Tile:
    level = draw(st.integers(-1, 63))
    span = tiles.TILE_HEIGHT * (max(level, 0) + 1)
    n = draw(st.integers(0, max(0, (1 << max(64 - span, 0)) - 1)))
    return Tile(level, n, draw(st.integers(1, 256)))


@given(any_tile())
def test_path_round_trip(tile: Tile) -> None:
    path = tiles.format_tile_path(tile)
    assert len(path) <= tiles.MAX_TILE_PATH_LENGTH
    assert tiles.parse_tile_path(path) == tile


def parse_or_format_error(text: str) -> None:
    try:
        tile = tiles.parse_tile_path(text)
    except FormatError:
        return
    assert tiles.format_tile_path(tile) == text  # whatever parses is in canonical form


@given(st.text())
def test_parse_fuzz_text(text: str) -> None:
    parse_or_format_error(text)


@given(st.text(alphabet="tile/entrsx0123456789.p", max_size=60))
def test_parse_fuzz_path_alphabet(text: str) -> None:
    parse_or_format_error(text)


@given(any_tile(), st.integers(0, 200), st.characters())
def test_parse_fuzz_mutated_paths(tile: Tile, at: int, char: str) -> None:
    path = tile.path
    at %= len(path) + 1
    parse_or_format_error(path[:at] + char + path[at:])
    parse_or_format_error(path[:at] + path[at + 1 :])


def test_tile_constructor_checks() -> None:
    for bad in [(-2, 0, 1), (64, 0, 1), (0, -1, 1), (0, 0, 0), (0, 0, 257), (0, 2**56, 1)]:
        with pytest.raises(UsageError):
            Tile(*bad)
    assert Tile(0, 3).is_full and not Tile(0, 3, 5).is_full
    assert Tile(-1, 2).is_entries and Tile(-1, 2).start == 512
    assert Tile(1, 2).start == 2 * 65536


# ----- which tiles a tree has ------------------------------------------------------------------


def test_tiles_of_the_c2sp_examples() -> None:
    tiles70k = tiles.tiles_for_size(70_000)
    full0 = [t for t in tiles70k if t.level == 0 and t.is_full]
    assert [t.n for t in full0] == list(range(273))
    assert [t for t in tiles70k if not (t.level == 0 and t.is_full)] == [
        Tile(0, 273, 112),
        Tile(1, 0),
        Tile(1, 1, 17),
        Tile(2, 0, 1),
    ]
    assert tiles.tiles_for_size(256) == [Tile(0, 0), Tile(1, 0, 1)]
    assert tiles.tiles_for_size(0) == []
    assert tiles.tree_hash_tiles(70_000) == [Tile(2, 0, 1), Tile(1, 1, 17), Tile(0, 273, 112)]
    assert tiles.entry_bundles_for_size(513) == [Tile(-1, 0), Tile(-1, 1), Tile(-1, 2, 1)]
    assert tiles.entry_bundles_for_size(512) == [Tile(-1, 0), Tile(-1, 1)]


@given(st.integers(0, 200_000), st.integers(0, 200_000))
@settings(deadline=None)  # the first example builds the shared store
def test_new_tiles_are_the_difference(a: int, b: int) -> None:
    old, new = min(a, b), max(a, b)
    expected = set(tiles.tiles_for_size(new)) - set(tiles.tiles_for_size(old))
    assert set(tiles.new_tiles(old, new)) == expected
    for tile in tiles.tiles_for_size(new):
        scale = tiles.TILE_WIDTH**tile.level
        if not tile.is_full:  # C2SP: floor(s / 256**l) mod 256 entries
            assert tile.width == (new // scale) % 256
        assert tiles.tile_in_tree(tile, new) == tile


def test_new_tiles_rejects_shrinking() -> None:
    with pytest.raises(UsageError):
        tiles.new_tiles(5, 4)


# ----- tile data -------------------------------------------------------------------------------

SIZE = 70_000


@cache
def big_store() -> tlog.MemoryHashStore:
    store = tlog.MemoryHashStore()
    for i in range(SIZE):
        store.append_record(i.to_bytes(4, "big"))
    return store


def entry(i: int) -> bytes:
    return i.to_bytes(4, "big")


def test_standard_leaves_tile_hashes_to_known_root() -> None:
    store = standard_store()
    data = tiles.read_tile_data(Tile(0, 0, 8), store)
    assert data == b"".join(tlog.record_hash(leaf) for leaf in STANDARD_LEAVES)
    assert tiles.tile_hash(data).hex() == KNOWN_ROOTS[8]
    for size in range(1, 9):
        assert tiles.tree_hash_tiles(size) == [Tile(0, 0, size)]
        tile_data = {Tile(0, 0, size): data[: 32 * size]}
        assert tiles.tree_hash_from_tiles(size, tile_data).hex() == KNOWN_ROOTS[size]


def test_tile_data_follows_the_c2sp_definition() -> None:
    """Hash i of tile (l, n) is MTH(D[(n*256+i)*256**l : (n*256+i+1)*256**l])."""
    store = big_store()
    naive = NaiveTree([entry(i) for i in range(SIZE)])
    all_data = {t: tiles.read_tile_data(t, store) for t in tiles.tiles_for_size(SIZE)}
    for tile, data in all_data.items():
        assert len(data) == 32 * tile.width
        span = tiles.TILE_WIDTH**tile.level
        for i in (0, tile.width // 2, tile.width - 1):
            lo = (tile.n * 256 + i) * span
            assert data[32 * i : 32 * i + 32] == naive.mth(lo, lo + span)
        if tile.level > 0:  # each hash is the root of the full tile below
            for i in range(tile.width):
                below = all_data[Tile(tile.level - 1, tile.n * 256 + i)]
                assert data[32 * i : 32 * i + 32] == tiles.tile_hash(below)
    assert tiles.tree_hash_from_tiles(SIZE, all_data) == naive.mth(0, SIZE)


def test_partial_tiles_hash_up_to_every_tree_hash() -> None:
    store = big_store()
    for size in [*range(1, 700), 65535, 65536, 65537, SIZE]:
        data = {t: tiles.read_tile_data(t, store) for t in tiles.tree_hash_tiles(size)}
        assert all(not t.is_full for t in data)
        assert tiles.tree_hash_from_tiles(size, data) == tlog.tree_hash(size, store)


def test_tile_hash_and_hash_from_tile_errors() -> None:
    store = big_store()
    data = tiles.read_tile_data(Tile(0, 0), store)
    with pytest.raises(UsageError):
        tiles.tile_hash(data[: 32 * 3])
    with pytest.raises(UsageError):
        tiles.tile_hash(b"")
    with pytest.raises(UsageError):
        tiles.hash_from_tile(Tile(0, 0), data, tlog.stored_hash_index(0, 256))
    with pytest.raises(UsageError):
        tiles.hash_from_tile(Tile(0, 0, 4), data[:128], tlog.stored_hash_index(3, 0))
    with pytest.raises(FormatError):
        tiles.hash_from_tile(Tile(0, 0), data[:-1], 0)
    assert store.read_hashes([tlog.stored_hash_index(8, 0)]) == [tiles.tile_hash(data)]
    upper_half = tlog.stored_hash_index(7, 1)
    assert tiles.hash_from_tile(Tile(0, 0), data, upper_half) == tiles.tile_hash(data[32 * 128 :])
    with pytest.raises(UsageError):  # the root of tile 0/000 is the first hash of tile 1/000
        tiles.hash_from_tile(Tile(0, 0), data, tlog.stored_hash_index(8, 0))
    with pytest.raises(UsageError):
        tiles.tile_data_indexes(Tile(-1, 0))


# ----- proofs from tiles -----------------------------------------------------------------------


class TileServer:
    """Serves tiles of the shared store, counting requests; may corrupt one tile."""

    def __init__(self, corrupt: Callable[[Tile, bytes], bytes] | None = None) -> None:
        self.store = big_store()
        self.requests: list[Tile] = []
        self.corrupt = corrupt

    def fetch(self, wanted: Sequence[Tile]) -> list[bytes]:
        self.requests.extend(wanted)
        out = []
        for tile in wanted:
            data = tiles.read_tile_data(tile, self.store)
            out.append(self.corrupt(tile, data) if self.corrupt else data)
        return out


@given(st.integers(1, SIZE), st.data())
@settings(deadline=None)  # the first example builds the shared store
def test_proofs_from_tiles_equal_proofs_from_storage(size: int, data: st.DataObject) -> None:
    store = big_store()
    server = TileServer()
    reader = tiles.TileHashReader(size, tlog.tree_hash(size, store), server.fetch)
    t = data.draw(st.integers(1, size))
    n = data.draw(st.integers(0, t - 1))
    assert tlog.prove_record(t, n, reader) == tlog.prove_record(t, n, store)
    assert tlog.prove_tree(t, n + 1, reader) == tlog.prove_tree(t, n + 1, store)
    assert tlog.tree_hash(t, reader) == tlog.tree_hash(t, store)
    fetched = len(server.requests)
    tlog.prove_record(t, n, reader)
    assert len(server.requests) == fetched  # authenticated tiles are cached


def test_tile_reader_reads_about_one_tile_per_level() -> None:
    server = TileServer()
    reader = tiles.TileHashReader(SIZE, tlog.tree_hash(SIZE, big_store()), server.fetch)
    reader.read_hashes([tlog.stored_hash_index(0, 12345)])  # record 12345 is in tile 0/048
    tree_tiles = [Tile(2, 0, 1), Tile(1, 1, 17), Tile(0, 273, 112)]
    assert server.requests == [*tree_tiles, Tile(1, 0), Tile(0, 48)]
    # Its whole proof then lies in tiles already fetched and authenticated.
    assert tlog.prove_record(SIZE, 12345, reader) == tlog.prove_record(SIZE, 12345, big_store())
    assert len(server.requests) == 5


@pytest.mark.parametrize("victim", range(5))
def test_tile_reader_rejects_any_corrupted_tile(victim: int) -> None:
    plan = tiles.authentication_plan(SIZE, [Tile(0, 48)])
    assert len(plan) == 5
    target = plan[victim]

    def corrupt(tile: Tile, data: bytes) -> bytes:
        return flip_bit(data, 8 * 32 * (tile.width // 2) + 3) if tile == target else data

    server = TileServer(corrupt)
    reader = tiles.TileHashReader(SIZE, tlog.tree_hash(SIZE, big_store()), server.fetch)
    with pytest.raises(VerificationError):
        reader.read_hashes([tlog.stored_hash_index(0, 48 * 256 + 7)])


def test_tile_reader_errors() -> None:
    root = tlog.tree_hash(SIZE, big_store())
    reader = tiles.TileHashReader(SIZE, flip_bit(root, 0), TileServer().fetch)
    with pytest.raises(VerificationError):
        reader.read_hashes([0])
    reader = tiles.TileHashReader(SIZE, root, TileServer().fetch)
    with pytest.raises(UsageError):
        reader.read_hashes([tlog.stored_hash_count(SIZE)])
    with pytest.raises(UsageError):
        reader.read_tiles([Tile(0, 273, 100)])  # an older partial tile
    reader = tiles.TileHashReader(SIZE, root, lambda ts: [b"\x00" * 31 for _ in ts])
    with pytest.raises(FormatError):
        reader.read_hashes([0])
    reader = tiles.TileHashReader(SIZE, root, lambda ts: [])
    with pytest.raises(FormatError):
        reader.read_hashes([0])
    with pytest.raises(UsageError):
        tiles.TileHashReader(0, tlog.EMPTY_TREE_HASH, TileServer().fetch).read_hashes([0])


def test_check_tile() -> None:
    store = big_store()
    root = tlog.tree_hash(SIZE, store)
    server = TileServer()
    for tile in tiles.tiles_for_size(SIZE)[::17] + tiles.tree_hash_tiles(SIZE):
        data = tiles.read_tile_data(tile, store)
        tiles.check_tile(SIZE, root, tile, data, server.fetch)
        with pytest.raises(VerificationError):
            tiles.check_tile(SIZE, root, tile, flip_bit(data, 77), server.fetch)
    with pytest.raises(UsageError):
        tiles.check_tile(SIZE, root, Tile(0, 300), b"\x00" * 8192, server.fetch)
    with pytest.raises(UsageError):
        tiles.authenticate_tiles(SIZE, root, {Tile(0, 5): tiles.read_tile_data(Tile(0, 5), store)})


# ----- entry bundles ---------------------------------------------------------------------------

entries_strategy = st.lists(st.binary(max_size=300), min_size=1, max_size=256)


@given(entries_strategy)
def test_bundle_round_trip(entries: list[bytes]) -> None:
    bundle = tiles.encode_entry_bundle(entries)
    assert len(bundle) == sum(2 + len(e) for e in entries)
    assert tiles.decode_entry_bundle(bundle) == entries
    assert tiles.decode_entry_bundle(bundle, len(entries)) == entries


@given(st.binary(max_size=2000))
def test_bundle_decode_fuzz(data: bytes) -> None:
    try:
        entries = tiles.decode_entry_bundle(data)
    except FormatError:
        return
    assert tiles.encode_entry_bundle(entries) == data


@given(entries_strategy, st.integers(0, 10**6))
def test_bundle_decode_rejects_truncation(entries: list[bytes], cut: int) -> None:
    bundle = tiles.encode_entry_bundle(entries)
    cut = cut % len(bundle)
    if cut == 0:
        return
    prefix = bundle[:-cut]
    try:
        decoded = tiles.decode_entry_bundle(prefix, len(entries))
    except FormatError:
        return
    pytest.fail(f"a truncated bundle decoded to {len(decoded)} entries")


def test_bundle_errors() -> None:
    assert tiles.decode_entry_bundle(b"\x00\x00") == [b""]
    biggest = b"\xab" * tiles.MAX_ENTRY_SIZE
    assert tiles.decode_entry_bundle(tiles.encode_entry_bundle([biggest])) == [biggest]
    for bad in [b"", b"\x00", b"\x00\x05abc", b"\x00\x01a\x00", b"\x00\x01a\x00\x02b"]:
        with pytest.raises(FormatError):
            tiles.decode_entry_bundle(bad)
    with pytest.raises(FormatError):
        tiles.decode_entry_bundle(b"\x00\x00" * 257)
    with pytest.raises(FormatError):
        tiles.decode_entry_bundle(b"\x00\x00" * 3, 4)
    with pytest.raises(UsageError):
        tiles.encode_entry_bundle([biggest + b"\x00"])
    with pytest.raises(UsageError):
        tiles.encode_entry_bundle([])
    with pytest.raises(UsageError):
        tiles.encode_entry_bundle([b""] * 257)


def test_check_entry_bundle() -> None:
    store = big_store()
    entries = [entry(i) for i in range(256, 512)]
    level0 = tiles.read_tile_data(Tile(0, 1), store)
    tiles.check_entry_bundle(entries, level0)
    with pytest.raises(VerificationError):
        tiles.check_entry_bundle([*entries[:-1], b"other"], level0)
    with pytest.raises(VerificationError):
        tiles.check_entry_bundle(entries[:-1], level0)
