"""The pages a commit shares with the last one, known without encoding them (format 4).

A page's bytes are a function of its entries alone (:func:`.page.page_bytes`), so a page
of files cut from the very entry objects of a page of the last committed manifest is that
page again: its id is taken from that manifest's listing rather than computed. A commit of
a million files where one changed encodes and hashes the page that changed, not all 500.

Identity, not equality: the sync reuses the entry object of every file the stat cache
vouches for, and an entry never changes once made. The last manifest is held while a
commit looks (its entries stay alive), so an object's ``id`` names the same object
throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .manifest import Manifest

#: (kind, entries of one page) -> the id of that page in the last commit, or None
Known = Callable[[str, list[Any]], "str | None"]


def shared_pages(last: Manifest) -> Known:
    """What :func:`.paged.pages_of` asks: the id ``last`` gives a page of files made of
    these very entries, None for any other page (or when ``last`` does not list its
    pages' sizes: one made before this was recorded)."""
    files = last.files
    before = len(last.dirs) + len(last.links) + len(last.hardlinks)  # pages of the others
    starts: dict[int, tuple[str, int, int]] = {}  # id of the first entry -> (page, at, n)
    at = -before
    if len(last.page_entries) == len(last.pages):
        for pid, n in zip(last.pages, last.page_entries, strict=True):
            if 0 <= at < len(files):
                starts[id(files[at])] = (pid, at, n)
            at += n
    if at != len(files):  # the listing does not add up: trust none of it
        starts = {}

    def known(kind: str, batch: list[Any]) -> str | None:
        if kind != "files" or not batch:
            return None
        found = starts.get(id(batch[0]))
        if found is None:
            return None
        pid, start, n = found
        if n != len(batch) or files[start] is not batch[0]:
            return None
        same = all(a is b for a, b in zip(batch, files[start : start + n], strict=True))
        return pid if same else None

    return known
