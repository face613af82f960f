"""Restore: make the dir exactly a committed checkpoint, or the newest older one that is whole.

:mod:`.restore` picks the newest checkpoint whose manifest loads, keeps the files a warm
restart proves unchanged (:mod:`.kept`, :mod:`.presence`), fetches the rest
(:mod:`.download`; packed files by coalesced ranged reads, :mod:`.packread`), verifies every
byte against its hash and places each file without following a link out of the dir
(:mod:`.placement`). A damaged checkpoint is passed over, loudly. Nothing here imports save.
"""
