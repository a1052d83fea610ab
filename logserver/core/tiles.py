"""C2SP tlog-tiles: hash tiles, their paths, their authentication, and entry bundles.

A tiled log (c2sp.org/tlog-tiles) serves its Merkle tree as tiles of height 8: the tile
``tile/<L>/<N>`` holds the 256 consecutive stored hashes of tree level 8·L numbered
N·256 … N·256+255, so a level-0 tile holds record hashes and each hash of a level-L tile is
the root of a full tile one level below (a subtree of 256**L records). The rightmost tiles of a
tree are partial, ``tile/<L>/<N>.p/<W>`` with W in 1..255 hashes. Entries are served the same
way as entry bundles, ``tile/entries/<N>[.p/<W>]``: big-endian uint16 length-prefixed entries.

This module maps tiles onto ``tlog``'s dense stored-hash index (so a server reads a tile in one
transaction), formats and strictly parses tile paths, and authenticates downloaded tiles against
a tree hash, in the manner of sumdb's ``TileHashReader``: a client that trusts a checkpoint can
compute any proof from tiles it fetched. Nothing here does I/O; fetching is a callable the
caller provides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

from logserver.core import tlog
from logserver.core.errors import FormatError, UsageError, VerificationError

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # hashes (or entries) in a full tile
ENTRIES_LEVEL = -1  # the level of entry bundles in :class:`Tile`
MAX_TILE_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF  # an entry's length must fit the bundle's uint16 prefix
MAX_TILE_PATH_LENGTH = 128
_INDEX_LIMIT = 1 << 64  # record indexes are unsigned 64-bit integers

TileFetcher = Callable[[Sequence["Tile"]], Sequence[bytes]]
"""Fetches the data of several tiles, in the order asked (for example over HTTP)."""


@dataclass(frozen=True, slots=True, order=True)
class Tile:
    """A hash tile at ``level`` >= 0, or an entry bundle at level :data:`ENTRIES_LEVEL`.

    ``n`` numbers the tile within its level; ``width`` is how many hashes (or entries) it
    holds, :data:`TILE_WIDTH` for a full tile.
    """

    level: int
    n: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not ENTRIES_LEVEL <= self.level <= MAX_TILE_LEVEL:
            raise UsageError(f"tile level {self.level} is outside -1..{MAX_TILE_LEVEL}")
        if not 1 <= self.width <= TILE_WIDTH:
            raise UsageError(f"tile width {self.width} is outside 1..{TILE_WIDTH}")
        if self.n < 0 or self.start >= _INDEX_LIMIT:
            raise UsageError(f"tile number {self.n} is outside any 64-bit log")

    @property
    def is_entries(self) -> bool:
        return self.level == ENTRIES_LEVEL

    @property
    def is_full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def start(self) -> int:
        """The index of the first record this tile spans."""
        return self.n << (TILE_HEIGHT * (max(self.level, 0) + 1))

    @property
    def path(self) -> str:
        return format_tile_path(self)


# ----- paths -----------------------------------------------------------------------------------


def format_tile_path(tile: Tile) -> str:
    """The tlog-tiles path of a tile, such as ``tile/0/x001/x234/067.p/8``."""
    digits = str(tile.n)
    digits = digits.zfill(-(-len(digits) // 3) * 3)
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    number = "/".join(["x" + g for g in groups[:-1]] + groups[-1:])
    level = "entries" if tile.is_entries else str(tile.level)
    suffix = "" if tile.is_full else f".p/{tile.width}"
    return f"tile/{level}/{number}{suffix}"


_TILE_PATH = re.compile(
    r"tile/(?P<level>entries|0|[1-9][0-9]?)/(?P<number>(?:x[0-9]{3}/)*[0-9]{3})"
    r"(?:\.p/(?P<width>[1-9][0-9]{0,2}))?",
    re.ASCII,
)


def parse_tile_path(path: str) -> Tile:
    """Parse a tile or entry-bundle path strictly; :class:`FormatError` on anything else.

    The path has no leading slash and no URL prefix. N must use the fewest 3-digit groups,
    L must be 0..63 and W 1..255, all without leading zeros.
    """
    if len(path) > MAX_TILE_PATH_LENGTH:
        raise FormatError("tile path", f"longer than {MAX_TILE_PATH_LENGTH} characters")
    match = _TILE_PATH.fullmatch(path)
    if match is None:
        raise FormatError("tile path", f"{path!r} is not tile/<L>/<N>[.p/<W>]")
    level_text, number, width_text = match.group("level", "number", "width")
    level = ENTRIES_LEVEL if level_text == "entries" else int(level_text)
    if level > MAX_TILE_LEVEL:
        raise FormatError("tile path", f"level {level} is above {MAX_TILE_LEVEL}")
    if number.startswith("x000/"):
        raise FormatError("tile path", f"tile number {number!r} has a leading zero group")
    n = int(number.replace("x", "").replace("/", ""))
    width = TILE_WIDTH if width_text is None else int(width_text)
    if width_text is not None and width >= TILE_WIDTH:
        raise FormatError("tile path", f"partial width {width} is not in 1..255")
    if n << (TILE_HEIGHT * (max(level, 0) + 1)) >= _INDEX_LIMIT:
        raise FormatError("tile path", f"tile number {n} is beyond any 64-bit log")
    return Tile(level, n, width)


# ----- which tiles a tree has ------------------------------------------------------------------


def tile_in_tree(tile: Tile, size: int) -> Tile | None:
    """The tile at tile's position as a tree of ``size`` records has it (None if absent)."""
    available = size >> (TILE_HEIGHT * max(tile.level, 0))
    first = tile.n << TILE_HEIGHT
    if first >= available:
        return None
    return Tile(tile.level, tile.n, min(TILE_WIDTH, available - first))


def new_tiles(old_size: int, new_size: int) -> list[Tile]:
    """The hash tiles that appear or grow when the tree grows from old_size to new_size."""
    if not 0 <= old_size <= new_size:
        raise UsageError(f"tree cannot grow from {old_size} to {new_size}")
    tiles = []
    level = 0
    while new_size >> (TILE_HEIGHT * level) > 0:
        old_count = old_size >> (TILE_HEIGHT * level)  # hashes of tree level 8·level
        new_count = new_size >> (TILE_HEIGHT * level)
        if old_count != new_count:
            for n in range(old_count >> TILE_HEIGHT, new_count >> TILE_HEIGHT):
                tiles.append(Tile(level, n))
            n = new_count >> TILE_HEIGHT
            if width := new_count - (n << TILE_HEIGHT):
                tiles.append(Tile(level, n, width))
        level += 1
    return tiles


def tiles_for_size(size: int) -> list[Tile]:
    """Every hash tile of a tree of ``size`` records: full ones, then the partial one, by level."""
    return new_tiles(0, size)


def entry_bundles_for_size(size: int) -> list[Tile]:
    """Every entry bundle of a log of ``size`` entries."""
    full, width = divmod(size, TILE_WIDTH)
    bundles = [Tile(ENTRIES_LEVEL, n) for n in range(full)]
    return [*bundles, Tile(ENTRIES_LEVEL, full, width)] if width else bundles


# ----- tile data from stored hashes ------------------------------------------------------------


def tile_data_indexes(tile: Tile) -> list[int]:
    """The stored-hash indexes whose concatenation is the tile's data, in order."""
    if tile.is_entries:
        raise UsageError("an entry bundle holds entries, not stored hashes")
    first = tile.n << TILE_HEIGHT
    level = TILE_HEIGHT * tile.level
    return [tlog.stored_hash_index(level, first + i) for i in range(tile.width)]


def read_tile_data(tile: Tile, reader: tlog.HashReader) -> bytes:
    """The bytes of a hash tile: its stored hashes concatenated."""
    return b"".join(reader.read_hashes(tile_data_indexes(tile)))


def tile_hash(data: bytes) -> bytes:
    """The Merkle root of the hashes in data, whose count must be a power of two."""
    hashes = [data[i : i + tlog.HASH_SIZE] for i in range(0, len(data), tlog.HASH_SIZE)]
    count = len(hashes)
    if count == 0 or count & (count - 1) or len(data) % tlog.HASH_SIZE:
        raise UsageError(f"{len(data)} bytes are not a power-of-two number of hashes")
    while len(hashes) > 1:
        hashes = [tlog.node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def _tile_for_index(index: int) -> tuple[Tile, int, int]:
    """The narrowest tile from which the stored hash ``index`` can be computed, and the byte
    range of that tile's data whose Merkle root it is."""
    level, n = tlog.split_stored_hash_index(index)
    tile_level = level // TILE_HEIGHT
    within = level - TILE_HEIGHT * tile_level  # the hash's height inside the tile
    tile_n = (n << within) >> TILE_HEIGHT
    first = n - ((tile_n << TILE_HEIGHT) >> within)  # position among hashes of its level
    start, end = first << within, (first + 1) << within
    return Tile(tile_level, tile_n, end), start * tlog.HASH_SIZE, end * tlog.HASH_SIZE


def hash_from_tile(tile: Tile, data: bytes, index: int) -> bytes:
    """The stored hash ``index``, computed from the data of a tile that covers it."""
    _check_tile_data(tile, data)
    needed, start, end = _tile_for_index(index)
    if (needed.level, needed.n) != (tile.level, tile.n) or needed.width > tile.width:
        raise UsageError(f"stored hash {index} is not in tile {tile.path}")
    return tile_hash(data[start:end])


def _check_tile_data(tile: Tile, data: bytes) -> None:
    if tile.is_entries:
        raise UsageError("an entry bundle holds entries, not hashes")
    if len(data) != tile.width * tlog.HASH_SIZE:
        expected = tile.width * tlog.HASH_SIZE
        raise FormatError("tile", f"{tile.path} has {len(data)} bytes, expected {expected}")


# ----- authenticating tiles against a tree hash ------------------------------------------------


def tree_hash_tiles(size: int) -> list[Tile]:
    """The tiles from which the root of a tree of ``size`` records is computed: the partial
    tiles of the tree (one per level whose width is not zero)."""
    tiles: list[Tile] = []
    for index in tlog.tree_hash_indexes(size):
        tile = tile_in_tree(_tile_for_index(index)[0], size)
        assert tile is not None  # a hash of the tree lies in one of its tiles
        if tile not in tiles:
            tiles.append(tile)
    return tiles


def authentication_plan(size: int, wanted: Iterable[Tile]) -> list[Tile]:
    """The tiles to fetch to authenticate ``wanted`` tiles against a tree of ``size`` records:
    the tree-hash tiles, then each wanted tile preceded by the full ancestors it is checked
    against. Each wanted tile must be as the tree has it (full, or partial of the tree's width).
    """
    plan = tree_hash_tiles(size)
    planned = set(plan)
    for tile in wanted:
        if tile.is_entries or tile_in_tree(tile, size) != tile:
            raise UsageError(f"tile {tile.path} is not a hash tile of a tree of size {size}")
        chain = []
        step: Tile | None = tile
        while step is not None and step not in planned:
            chain.append(step)
            # A tile not among the tree-hash tiles is full, so its parent exists.
            step = tile_in_tree(Tile(step.level + 1, step.n >> TILE_HEIGHT), size)
        planned.update(chain)
        plan.extend(reversed(chain))
    return plan


def authenticate_tiles(
    size: int, root: bytes, data: Mapping[Tile, bytes], trusted: Iterable[Tile] = ()
) -> None:
    """Check that tiles, with their ancestors as :func:`authentication_plan` lists them, agree
    with the tree of ``size`` records and root ``root``. Tiles in ``trusted`` were already
    authenticated against that tree. Raises :class:`VerificationError` if they disagree.
    """
    trusted = set(trusted)
    for tile, tile_data in data.items():
        _check_tile_data(tile, tile_data)
    top = tree_hash_tiles(size)
    if any(tile in data and tile not in trusted for tile in top):
        missing = [tile.path for tile in top if tile not in data]
        if missing:
            raise UsageError(f"cannot check the tree hash without tiles {missing}")
        if tree_hash_from_tiles(size, data) != root:
            raise VerificationError(f"tiles do not hash to the root of the tree of size {size}")
    top_set = set(top)
    for tile, tile_data in data.items():
        if tile in trusted or tile in top_set:
            continue
        parent = tile_in_tree(Tile(tile.level + 1, tile.n >> TILE_HEIGHT), size)
        if not tile.is_full or parent is None or parent not in data:
            raise UsageError(f"tile {tile.path} cannot be checked against the tree of size {size}")
        index = tlog.stored_hash_index(TILE_HEIGHT * (tile.level + 1), tile.n)
        if hash_from_tile(parent, data[parent], index) != tile_hash(tile_data):
            raise VerificationError(f"tile {tile.path} disagrees with its parent {parent.path}")


def tree_hash_from_tiles(size: int, data: Mapping[Tile, bytes]) -> bytes:
    """The root of the tree of ``size`` records, computed from its :func:`tree_hash_tiles`."""
    indexes = tlog.tree_hash_indexes(size)
    hashes = []
    for index in indexes:
        tile = tile_in_tree(_tile_for_index(index)[0], size)
        assert tile is not None
        hashes.append(hash_from_tile(tile, data[tile], index))
    return tlog.tree_hash_from_hashes(size, hashes)


def check_tile(size: int, root: bytes, tile: Tile, data: bytes, fetch: TileFetcher) -> None:
    """Check one downloaded tile against a trusted tree, fetching the tiles that vouch for it."""
    others = [t for t in authentication_plan(size, [tile]) if t != tile]
    fetched = _fetch_all(fetch, others)
    fetched[tile] = data
    authenticate_tiles(size, root, fetched)


def _fetch_all(fetch: TileFetcher, tiles: Sequence[Tile]) -> dict[Tile, bytes]:
    if not tiles:
        return {}
    fetched = fetch(tiles)
    if len(fetched) != len(tiles):
        raise FormatError("tiles", f"asked for {len(tiles)} tiles, got {len(fetched)}")
    return {tile: bytes(data) for tile, data in zip(tiles, fetched, strict=True)}


class TileHashReader:
    """A :class:`tlog.HashReader` over tiles of a trusted tree (size, root), in the manner of
    sumdb's ``TileHashReader``: it fetches the tiles holding the hashes asked for, plus those
    needed to authenticate them, checks them all against the root, and only then answers. So
    ``tlog.prove_record(t, n, reader)`` for any t <= size yields proofs from a tile server.

    ``cache`` keeps authenticated tiles across calls. A tile's data is the same in every tree
    that contains it, so readers for several checkpoints of one log may share a cache, but only
    once those checkpoints are known to be consistent.
    """

    def __init__(
        self,
        size: int,
        root: bytes,
        fetch: TileFetcher,
        cache: MutableMapping[Tile, bytes] | None = None,
    ) -> None:
        self.size = size
        self.root = root
        self._fetch = fetch
        self._cache: MutableMapping[Tile, bytes] = {} if cache is None else cache

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        limit = tlog.stored_hash_count(self.size)
        where = []
        for index in indexes:
            if not 0 <= index < limit:
                raise UsageError(f"stored hash {index} is not in the tree of size {self.size}")
            tile = tile_in_tree(_tile_for_index(index)[0], self.size)
            assert tile is not None
            where.append(tile)
        self.read_tiles(where)
        return [hash_from_tile(t, self._cache[t], i) for t, i in zip(where, indexes, strict=True)]

    def read_tiles(self, tiles: Sequence[Tile]) -> list[bytes]:
        """The authenticated data of hash tiles of the tree, fetching what is not cached."""
        plan = authentication_plan(self.size, tiles)
        missing = [t for t in plan if t not in self._cache]
        if missing:
            data = _fetch_all(self._fetch, missing)
            trusted = [t for t in plan if t in self._cache]
            data.update((t, self._cache[t]) for t in trusted)
            authenticate_tiles(self.size, self.root, data, trusted)
            self._cache.update((t, data[t]) for t in missing)
        return [self._cache[t] for t in tiles]


# ----- entry bundles ---------------------------------------------------------------------------


def entry_bundle_plan(start: int, end: int) -> list[tuple[Tile, int]]:
    """The entry bundles that hold records start..end-1 of a tree of at least ``end`` records,
    each with the number of its leading entries that come before ``start``."""
    plan = []
    n = start // TILE_WIDTH
    while n * TILE_WIDTH < end:
        width = min(TILE_WIDTH, end - n * TILE_WIDTH)
        plan.append((Tile(ENTRIES_LEVEL, n, width), max(0, start - n * TILE_WIDTH)))
        n += 1
    return plan


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """Concatenate 1..256 entries, each prefixed with its length as a big-endian uint16."""
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise UsageError(f"an entry bundle holds 1..{TILE_WIDTH} entries, not {len(entries)}")
    parts = []
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise UsageError(f"an entry of {len(entry)} bytes exceeds {MAX_ENTRY_SIZE} bytes")
        parts += [len(entry).to_bytes(2, "big"), entry]
    return b"".join(parts)


def decode_entry_bundle(data: bytes, width: int | None = None) -> list[bytes]:
    """Split an entry bundle strictly; with ``width``, it must hold exactly that many entries."""
    entries: list[bytes] = []
    at = 0
    while at < len(data):
        if len(entries) == TILE_WIDTH:
            raise FormatError("entry bundle", f"more than {TILE_WIDTH} entries")
        if at + 2 > len(data):
            raise FormatError("entry bundle", "truncated length prefix")
        end = at + 2 + int.from_bytes(data[at : at + 2], "big")
        if end > len(data):
            raise FormatError("entry bundle", f"entry {len(entries)} is truncated")
        entries.append(bytes(data[at + 2 : end]))
        at = end
    if not entries:
        raise FormatError("entry bundle", "empty")
    if width is not None and len(entries) != width:
        raise FormatError("entry bundle", f"{len(entries)} entries, expected {width}")
    return entries


def check_entry_bundle(entries: Sequence[bytes], level0_tile_data: bytes) -> None:
    """Check that entries hash to the record hashes of the matching level-0 tile."""
    hashes = [tlog.record_hash(entry) for entry in entries]
    if b"".join(hashes) != level0_tile_data:
        raise VerificationError("entry bundle does not match its level-0 tile")
