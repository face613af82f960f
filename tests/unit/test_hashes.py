"""Format 5's content hashes (checkpoint/engine/format/hashes.py): ids that name their
algorithm, their keys, their checks, and the one-line refusal of a bad id in any format."""

import hashlib
import json
import zlib
from typing import Any

import blake3
import pytest

from checkpoint.engine.format import hashes, paged, whole
from checkpoint.engine.format.layout import Layout
from checkpoint.engine.format.manifest import Chunk, FileEntry, Manifest
from checkpoint.engine.format.page import PAGE_BITS
from checkpoint.errors import ManifestError

DATA = b"some bytes of a checkpoint"
SHA = hashlib.sha256(DATA).hexdigest()
B3 = "blake3:" + blake3.blake3(DATA).hexdigest()


def manifest(*chunks: Chunk, packs: dict[str, int] | None = None) -> Manifest:
    size = sum(c.size for c in chunks)
    return Manifest(
        job_id="j",
        sequence=2,
        attempt=1,
        created="2026-12-07T00:00:00Z",
        reason="exit",
        files=(FileEntry("f", size, 0o644, 1, chunks),),
        packs=packs or {},
    )


def test_new_data_is_named_by_blake3_and_checked_in_its_own_algorithm() -> None:
    assert hashes.new_id(DATA) == B3 and hashes.sha256_id(DATA) == SHA
    for digest in (SHA, B3):
        assert hashes.matches(digest, DATA)
        assert not hashes.matches(digest, DATA + b"!")
        v = hashes.Verifier(digest)
        v.update(b"junk read before a retry")
        v.restart()
        v.update(DATA[:5])
        v.update(memoryview(DATA)[5:])
        assert v.matches()
        v.update(b"!")
        assert not v.matches()


def test_the_two_algorithms_never_share_a_key_and_names_map_back() -> None:
    layout = Layout("job")
    same_hex = "blake3:" + SHA  # the same hex digits under either algorithm
    assert layout.blob_key(SHA) == f"job/blobs/{SHA[:2]}/{SHA}"  # as formats 1 to 4
    assert layout.blob_key(same_hex) == f"job/blobs/{SHA[:2]}/blake3-{SHA}"
    assert layout.pack_key(same_hex) == f"job/packs/{SHA[:2]}/blake3-{SHA}"
    for digest in (SHA, same_hex):
        assert hashes.id_of_name(layout.blob_key(digest).rsplit("/", 1)[1]) == digest
    assert hashes.packed(SHA) != hashes.packed(same_hex)
    assert len(hashes.packed(SHA)) == 32 and hashes.packed("") == b""


def test_a_file_read_again_keeps_the_sha256_ids_of_unchanged_bytes_only() -> None:
    identify = hashes.carrying(["", SHA, B3])
    assert identify(DATA) == SHA  # one of its sha256 chunks: stored, keeps its id
    assert identify(b"changed") == hashes.new_id(b"changed")  # new data: BLAKE3
    assert hashes.carrying([B3, ""]) is hashes.new_id  # nothing of sha256: hashed once


def test_identify_like_names_bytes_as_a_file_was_named() -> None:
    assert hashes.identify_like(["", SHA]) is hashes.sha256_id
    assert hashes.identify_like([B3]) is hashes.new_id
    assert hashes.identify_like([""]) is hashes.new_id  # holes only: new data


@pytest.mark.parametrize("as_pack", [False, True], ids=["blob", "packed"])
def test_format_5_only_where_blake3_is_and_it_round_trips(as_pack: bool) -> None:
    pack = "blake3:" + "c" * 64
    old = Chunk(SHA, 10, SHA if as_pack else None, 0)
    new = Chunk(B3, 7, pack if as_pack else None, 10 if as_pack else 0)
    packs_old = {SHA: 40} if as_pack else {}
    m_old = manifest(old, packs=packs_old)
    assert json.loads(whole.encode(m_old))["format"] == 3
    assert json.loads(paged.encode(m_old)[0])["format"] == 4
    m_mixed = manifest(old, new, packs={**packs_old, pack: 40} if as_pack else {})
    body = whole.encode(m_mixed)
    doc = json.loads(body)
    assert doc["format"] == 5 and doc["files"][0]["chunks"][1]["digest"] == B3
    assert whole.decode(body) == m_mixed
    root, pages = paged.encode(m_mixed)
    assert root.startswith(b'{"format":5,"paged":true,') and paged.is_paged(root)
    assert not paged.is_paged(body)
    back, _ = paged.decode(root, lambda ids: [dict(pages)[i] for i in ids])
    assert back.files == m_mixed.files and back.packs == m_mixed.packs


def test_a_page_of_sha256_chunks_is_the_same_object_under_format_4_and_5() -> None:
    """So the first format-5 commit after an upgrade writes only the pages that changed."""
    mask = (1 << PAGE_BITS) - 1
    cut = next(f"a{i}" for i in range(100_000) if zlib.crc32(f"a{i}".encode()) & mask == 0)
    old = [FileEntry(p, 10, 0o644, 1, (Chunk(SHA, 10),)) for p in ("a", cut)]  # one page
    m4 = Manifest(**{**manifest().__dict__, "files": tuple(old)})
    added = FileEntry("b", 7, 0o644, 1, (Chunk(B3, 7),))  # after the cut: a page of its own
    m5 = Manifest(**{**manifest().__dict__, "files": (*old, added)})
    root4, pages4 = paged.encode(m4)
    root5, pages5 = paged.encode(m5)
    assert (json.loads(root4)["format"], json.loads(root5)["format"]) == (4, 5)
    assert len(pages4) == 1 and len(pages5) == 2 and pages5[0] == pages4[0]


def bad_whole(fmt: int, chunk: dict[str, Any], packs: dict[str, int] | None = None) -> bytes:
    key = "digest" if fmt == 5 else "sha256"
    c = {("sha256" if key == "sha256" else "digest"): chunk.pop("id"), **chunk}
    return json.dumps(
        {
            "format": fmt,
            "job_id": "j",
            "sequence": 1,
            "attempt": 1,
            "created": "x",
            "files": [{"path": "f", "size": 7, "mode": 420, "mtime_ns": 1, "chunks": [c]}],
            "packs": packs or {},
        }
    ).encode()


@pytest.mark.parametrize(
    ("fmt", "chunk", "packs", "why"),
    [
        (5, {"id": "sha512:" + "a" * 128, "size": 7}, None, "unknown hash algorithm 'sha512'"),
        (5, {"id": "blake3:" + "a" * 63, "size": 7}, None, "not 64 lowercase hex"),
        (5, {"id": "blake3:" + "A" * 64, "size": 7}, None, "not 64 lowercase hex"),
        (5, {"id": "a" * 66, "size": 7}, None, "not 64 lowercase hex"),
        (5, {"id": 7, "size": 7}, None, "not a string"),
        (3, {"id": B3, "size": 7}, None, "BLAKE3 in a format-3 manifest"),
        (3, {"id": SHA, "size": 7, "pack": "blake3:" + "c" * 64, "offset": 0},
         {"blake3:" + "c" * 64: 9}, "bad pack id .*BLAKE3 in a format-3"),
        (5, {"id": B3, "size": 7, "pack": "md5:" + "c" * 32, "offset": 0},
         {"md5:" + "c" * 32: 9}, "bad pack id .*unknown hash algorithm 'md5'"),
    ],
)  # fmt: skip
def test_a_bad_id_is_refused_in_one_line(
    fmt: int, chunk: dict[str, Any], packs: dict[str, int] | None, why: str
) -> None:
    with pytest.raises(ManifestError, match=why) as info:
        whole.decode(bad_whole(fmt, chunk, packs), where="job/manifests/0000000001.json")
    assert str(info.value).startswith("job/manifests/0000000001.json: ")
    assert "\n" not in str(info.value)


def test_a_format_4_root_may_not_name_blake3_data_nor_a_format_5_one_lack_its_marker() -> None:
    m = manifest(Chunk(B3, 7))
    root, pages = paged.encode(m)
    fetch = lambda ids: [dict(pages)[i] for i in ids]  # noqa: E731
    as4 = root.replace(b'{"format":5,"paged":true,', b'{"format":4,')
    with pytest.raises(ManifestError, match="BLAKE3 in a format-4 manifest"):
        paged.decode(as4, fetch)
    unmarked = root.replace(b'"paged":true,', b"")
    assert not paged.is_paged(unmarked)
    with pytest.raises(ManifestError, match='no "paged": true'):
        paged.decode(unmarked, fetch)
    with pytest.raises(ManifestError, match="malformed"):  # and as a whole one: no files
        whole.decode(unmarked)
