"""Where the packed chunks of one sync's uploads lie: each chunk's pack and offset held as
one int, not a tuple of a pack id and an offset (about 50 bytes a chunk less)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

#: offsets below 2**40: a pack is at most ``format.manifest.MAX_PACK_SIZE`` (1 GiB)
_OFFSET_BITS = 40
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1


class Located(Mapping[str, tuple[str, int]]):
    """Chunk hash -> (pack id, offset in the pack), for the packs stored so far."""

    __slots__ = ("_at", "_packs")

    def __init__(self) -> None:
        self._packs: list[str] = []
        self._at: dict[str, int] = {}  # hash -> pack's number << _OFFSET_BITS | offset

    def add(self, pack: str, members: Iterable[tuple[str, int]]) -> None:
        """The chunks ``members`` (hash, offset) are stored in ``pack``."""
        n = len(self._packs) << _OFFSET_BITS
        self._packs.append(pack)
        for h, offset in members:
            assert 0 <= offset <= _OFFSET_MASK, offset
            self._at[h] = n | offset

    def __getitem__(self, h: str) -> tuple[str, int]:
        at = self._at[h]
        return self._packs[at >> _OFFSET_BITS], at & _OFFSET_MASK

    def __contains__(self, h: object) -> bool:
        return h in self._at

    def __iter__(self) -> Iterator[str]:
        return iter(self._at)

    def __len__(self) -> int:
        return len(self._at)
