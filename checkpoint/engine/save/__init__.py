"""Save: from the dir (or a freeze of it) to a committed checkpoint.

A sync (:mod:`.sync`) walks the dir (:mod:`..localdir.scan`), takes each file whose stat
has not moved on the stat cache's word and reads the rest (:mod:`.entries`), uploads new
chunks (small files in content-addressed packs, :mod:`.upload`, their places
:mod:`.located`), rewrites sparse packs
(:mod:`.repack`), and commits one manifest (:mod:`.commit`, :mod:`..format.jobstore`). At a
job's save point :mod:`.freeze` takes the state under the job's lock, into a mirror of hard
links and copies of files written in place (:mod:`.freezearea`), and :mod:`.savepoints`
syncs from that freeze. Nothing here imports restore.
"""
