"""What the stored bytes mean: the manifest, its formats, and every key of a job.

A checkpoint is a manifest: every file of the checkpoint dir with its size, mode, mtime and
the content-addressed chunks that hold its bytes (:mod:`.manifest`, the data and the one
validation of every entry). Chunk contents are stored apart, as blobs or inside packs,
named by their hash (:mod:`.hashes`: BLAKE3 for new data, sha256 for what formats 1 to 4
stored, each id naming its algorithm); a manifest names them, so checkpoints share what did
not change.

**The formats.** Every loader runs each entry through the same checks and the whole tree
through the same final check (:func:`.whole.assemble`), so a store's bytes cannot name a
place outside the checkpoint dir whatever format they claim. That check makes one pass over
entries in the walk's order, as sync writes them (:mod:`.tree`), and holds sets of every
path only for entries in another order.

1. one JSON object; a chunk is ``[sha256, size]``; directories without modes;
2. one JSON object; a chunk is ``{"sha256", "size"}`` or a hole ``{"hole": n}`` (zeros
   stored nowhere); directories with their modes;
3. as 2, and a chunk may lie in a pack (``"pack", "offset"``), with a ``packs`` table of
   every pack's size. Sync writes it for at most
   :data:`~.paged.PAGED_ABOVE` entries: one object, one request to commit or to load
   (:mod:`.whole` reads 1 to 3 and writes 3);
4. a root and pages (:mod:`.paged`, :mod:`.page`), for more entries;
5. either shape, when any chunk or pack is named by BLAKE3 (``blake3:<hex>``; the others
   keep their sha256): a whole manifest with a chunk's id under ``"digest"``, or a root
   ``{"format": 5, "paged": true, ...}`` whose pages hold ids of both kinds. An agent that
   reads 1 to 4 refuses it ("unsupported format 5") and falls back to an older checkpoint.

**A paged manifest (format 4).** The entries (dirs, links, hard links, files, each kind in
the manifest's order) are cut into pages where a path's CRC-32 ends in :data:`~.page.PAGE_BITS`
zero bits, so a changed file changes its own page and no other; a page is named by the
sha256 of its bytes (in format 5 too: a page of sha256 chunks is the same object under
either root) and stored once, shared by every checkpoint that has it (as restic's
trees are). The root holds the job's facts, the ``packs`` table and the list of pages
(id, kind, number of entries). Writing (:meth:`.jobstore.JobStore.commit`): encode, read
the result back with the code restore uses (pages a committed checkpoint already has are
not parsed again), PUT the pages the previous checkpoint does not have, then create the
root. Reading (:meth:`.jobstore.JobStore.load_manifest`): a look at the object's head tells
a root from a whole manifest; the root's listing is checked before any page is read; the
pages are fetched a few at a time, in order, each checked against its id, each entry
validated; then the tree. ``gc`` reads each page once however many checkpoints share it
(:func:`.paged.page_refs`).

**The store, and the commit.** :mod:`.jobstore` owns every key of a job (the layout is in
its docstring) and the commit protocol: an attempt claims a fencing token; blobs, packs and
pages go up content-addressed; the manifest (or its root) is written last with a
create-only write, so a checkpoint is committed whole or not at all.
"""
