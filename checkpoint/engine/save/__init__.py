"""Save: from the dir (or a freeze of it) to a committed checkpoint.

A sync walks the dir (:mod:`..localdir.scan`), hashes only what changed, uploads new chunks
(small files in content-addressed packs, :mod:`.upload`), rewrites sparse packs
(:mod:`.repack`), and commits one manifest (:mod:`..format.jobstore`). At a job's save point
:mod:`.freeze` takes the state under the job's lock (hard links, copies of files written in
place) and :mod:`.savepoints` syncs from that freeze. Nothing here imports restore.
"""
