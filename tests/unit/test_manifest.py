import json

import pytest

from checkpoint.engine.format import whole
from checkpoint.engine.format.manifest import (
    MAX_MANIFEST_BYTES,
    Chunk,
    DirEntry,
    FileEntry,
    HardLinkEntry,
    LinkEntry,
    Manifest,
    check_relpath,
)
from checkpoint.errors import ManifestError

H = "a" * 64


def manifest(**over: object) -> Manifest:
    base = dict(
        job_id="j",
        sequence=3,
        attempt=2,
        created="2026-11-23T00:00:00Z",
        reason="exit",
        files=(FileEntry("dir/f.bin", 5, 0o644, 123, (Chunk(H, 2), Chunk("b" * 64, 3))),),
        dirs=(DirEntry("dir", 0o750),),
        links=(LinkEntry("l", "dir/f.bin"),),
        progress={"step": 7},
    )
    base.update(over)
    return Manifest(**base)  # type: ignore[arg-type]


def doc(**files_over: object) -> dict:
    d = json.loads(whole.encode(manifest()))
    d["files"][0].update(files_over)
    return d


def test_round_trip() -> None:
    m = manifest()
    assert whole.decode(whole.encode(m)) == m
    assert m.size == 5
    assert m.blob_hashes() == {H, "b" * 64}


def test_non_utf8_file_name_survives() -> None:
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    m = manifest(files=(FileEntry(name, 0, 0o600, 1, ()),), dirs=(), links=())
    back = whole.decode(whole.encode(m))
    assert back.files[0].path.encode("utf-8", "surrogateescape") == b"caf\xe9.txt"


@pytest.mark.parametrize(
    "path",
    [
        "../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "./a",
        "a/.",
        "",
        "a\x00b",
        "a/" + "x" * 4000,
        ".spot-agent/x",
    ],
)
def test_escaping_paths_are_refused(path: str) -> None:
    with pytest.raises(ManifestError):
        check_relpath(path)
    with pytest.raises(ManifestError):
        whole.decode(json.dumps(doc(path=path)).encode())


@pytest.mark.parametrize("target", ["/etc", "../x", "a/../../x", "..", ""])
def test_escaping_link_targets_are_refused(target: str) -> None:
    d = json.loads(whole.encode(manifest()))
    d["links"] = [{"path": "l", "target": target}]
    with pytest.raises(ManifestError, match="link target"):
        whole.decode(json.dumps(d).encode())


def test_file_below_a_link_is_refused() -> None:
    d = json.loads(whole.encode(manifest()))
    d["links"] = [{"path": "dir", "target": "sub"}]
    d["dirs"] = []
    with pytest.raises(ManifestError, match="below the file or symlink"):
        whole.decode(json.dumps(d).encode())


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"{not json", "not valid JSON"),
        (b'{"format": 1, "job_id": "j"', "not valid JSON"),  # truncated
        (b"[]", "not a JSON object"),
        (b'{"format": 99}', "unsupported format"),
        (b'{"format": 1, "files": []}', "malformed"),
    ],
)
def test_malformed_manifests_name_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as info:
        whole.decode(raw, where="job/manifests/0000000001.json")
    assert "job/manifests/0000000001.json" in str(info.value)
    assert "\n" not in str(info.value)


def test_chunk_sizes_must_add_up() -> None:
    with pytest.raises(ManifestError, match="do not add up"):
        whole.decode(json.dumps(doc(size=6)).encode())


def test_bad_hash_and_negative_size() -> None:
    with pytest.raises(ManifestError, match="bad chunk hash"):
        whole.decode(json.dumps(doc(chunks=[{"sha256": "XYZ", "size": 5}])).encode())
    with pytest.raises(ManifestError, match="integer"):
        whole.decode(json.dumps(doc(size=-1)).encode())


def test_duplicate_paths_are_refused() -> None:
    d = json.loads(whole.encode(manifest()))
    d["files"].append(dict(d["files"][0]))
    with pytest.raises(ManifestError, match="twice"):
        whole.decode(json.dumps(d).encode())


def test_setuid_bits_are_dropped() -> None:
    m = whole.decode(json.dumps(doc(mode=0o4755)).encode())
    assert m.files[0].mode == 0o755


def test_any_name_the_filesystem_allows_and_times_before_1970_round_trip() -> None:
    odd = b"back\\slash \xff\xfe\n\t\x01 *?".decode("utf-8", "surrogateescape")
    f = FileEntry(odd, 0, 0o600, -1_234_567_890_123_456_789, ())
    m = manifest(files=(f,), dirs=(), links=())
    back = whole.decode(whole.encode(m))
    assert back.files[0] == f
    assert check_relpath("a\\..\\b") == "a\\..\\b"  # one name on POSIX, not a way out


def test_an_entry_below_a_file_is_refused() -> None:
    d = json.loads(whole.encode(manifest()))
    d["files"].append(dict(d["files"][0], path="dir/f.bin/inner"))
    with pytest.raises(ManifestError, match="below the file"):
        whole.decode(json.dumps(d).encode())


def test_hard_links_holes_and_dir_modes_round_trip() -> None:
    f = FileEntry("big", 3 << 30, 0o644, 5, (Chunk(H, 10), Chunk("", (3 << 30) - 10)))
    m = manifest(
        files=(f,),
        dirs=(DirEntry("d", 0o511),),
        links=(),
        hardlinks=(HardLinkEntry("d/again", "big"),),
    )
    back = whole.decode(whole.encode(m))
    assert back == m
    assert back.blob_hashes() == {H}  # a hole is stored nowhere
    d = json.loads(whole.encode(m))
    d["hardlinks"] = [{"path": "x", "target": "d"}]
    with pytest.raises(ManifestError, match="not a file"):
        whole.decode(json.dumps(d).encode())


def test_format_1_still_loads() -> None:
    raw = {
        "format": 1, "job_id": "j", "sequence": 1, "attempt": 1, "created": "t",
        "dirs": ["d"], "links": [], "files": [
            {"path": "d/f", "size": 3, "mode": 420, "mtime_ns": 1, "chunks": [[H, 3]]}
        ],
    }  # fmt: skip
    m = whole.decode(json.dumps(raw).encode())
    assert m.dirs == (DirEntry("d"),) and m.files[0].chunks == (Chunk(H, 3),)


@pytest.mark.parametrize(
    "over, message",
    [
        ({"size": 10**15, "chunks": [{"sha256": H, "size": 10**15}]}, "chunk size"),
        ({"size": 10**15, "chunks": [{"hole": 10**15}]}, "hole size"),
        ({"mtime_ns": 1 << 70}, "mtime"),
    ],
)
def test_sizes_and_times_beyond_any_file_are_refused(over: dict, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        whole.decode(json.dumps(doc(**over)).encode())


def test_hostile_shapes_are_refused_without_a_crash() -> None:
    deep = b'{"format": 2, "progress": ' + b"[" * 400_000 + b"]" * 400_000 + b"}"
    with pytest.raises(ManifestError, match="nested too deeply"):
        whole.decode(deep)
    with pytest.raises(ManifestError, match="over the"):
        whole.decode(b" " * (MAX_MANIFEST_BYTES + 1))


# -- format 3: chunks in packs ------------------------------------------------------------

P = "c" * 64


def packed(**over: object) -> dict:
    """A format-3 manifest whose file has one chunk in pack P, then ``over`` applied."""
    m = manifest(
        files=(FileEntry("f", 5, 0o644, 1, (Chunk(H, 5, P, 10),)),),
        dirs=(),
        links=(),
        packs={P: 20},
    )
    d = json.loads(whole.encode(m))
    d["files"][0]["chunks"][0].update(over.pop("chunk", {}))  # type: ignore[arg-type]
    d.update(over)
    return d


def test_a_packed_chunk_round_trips_with_its_pack_and_offset() -> None:
    d = packed()
    assert d["format"] == 3 and d["packs"] == {P: 20}
    assert d["files"][0]["chunks"] == [{"sha256": H, "size": 5, "pack": P, "offset": 10}]
    back = whole.decode(json.dumps(d).encode())
    assert back.files[0].chunks == (Chunk(H, 5, P, 10),)
    assert back.packs == {P: 20} and back.pack_ids() == {P}
    assert back.stored_blobs() == set() and back.blob_hashes() == {H}


@pytest.mark.parametrize(
    "over, why",
    [
        ({"chunk": {"pack": "C" * 64}}, "bad pack id"),
        ({"chunk": {"pack": "c" * 63}}, "bad pack id"),
        ({"chunk": {"pack": 7}}, "bad pack id"),
        ({"chunk": {"offset": -1}}, "chunk offset"),
        ({"chunk": {"offset": 1 << 63}}, "chunk offset"),
        ({"chunk": {"offset": "10"}}, "chunk offset"),
        ({"chunk": {"offset": 16}}, "beyond the end of pack"),
        ({"packs": {}}, "not in the manifest's packs table"),
        ({"packs": {P: -1}}, "size"),
        ({"packs": {P: 1 << 40}}, "size"),
        ({"packs": {"zz": 20}}, "bad pack id"),
        ({"packs": [P]}, "packs must be an object"),
    ],
)
def test_a_bad_pack_reference_is_refused_on_load(over: dict, why: str) -> None:
    with pytest.raises(ManifestError, match=why):
        whole.decode(json.dumps(packed(**over)).encode())


def test_pack_fields_in_an_older_format_are_ignored() -> None:
    d = packed(format=2)  # a format-2 reader never wrote them; nothing points into a pack
    back = whole.decode(json.dumps(d).encode())
    assert back.files[0].chunks == (Chunk(H, 5),) and back.packs == {}
