"""Every tunable of the engine, in one frozen object: :class:`EngineConfig`.

Like s3transfer's ``TransferConfig``: sizes, bounds and intervals that a module would
otherwise keep as a global (and a test would monkeypatch) are fields here, with the
agent's defaults. The agent builds one from its settings in one place
(:func:`agent.config.engine.engine_config`) and hands it to
:class:`~checkpoint.engine.checkpointer.Checkpointer`, which passes each piece the fields
it uses; a test builds one with the few values it needs changed.

Where each field comes from, and who reads it:

========================  ==========================================  ======================
field                     setting (option, environment)               read by
========================  ==========================================  ======================
``max_bytes_in_flight``   ``--max-bytes-in-flight``                   upload, restore
                          (``SPOT_AGENT_MAX_BYTES_IN_FLIGHT``)
``chunk_size``            none: the store's format (8 MiB chunks)     save.sync
``pack_threshold``        none: files under it travel in packs        save.sync, save.upload
``pack_target``           none: a pack is sealed at this size         save.upload
``paged_above``           none: manifests of more entries are paged   save.sync
``concurrency``           none: transfers at once (None: the store's  the transfer pool
                          own, S3 16, a local directory 4)
``progress_seconds``      none: seconds between progress reports      engine.progress
``list_page``             none: keys per listing page (S3's maximum)  restore.presence
``read_size``             none: one read of a file while hashing      localdir.scan
``boot_id_path``          none: the kernel's boot id (warm restarts)  localdir.localindex
``coalesce_gap``,         none: how packed files are fetched by       restore.packread
``max_range``,            ranged reads
``pack_batch_bytes``
``max_open_files``        none: staging files open in a restore       restore.download
``copy_budget``           none: bytes a freeze copies under the lock  save.freeze
``long_save_seconds``     none: a save holding the lock this long is  save.freeze
                          reported (``freeze.waiting``)
``freeze_attempts``       none: freezes tried while files change      save.savepoints
``upload_trust_seconds``  none: how long an upload is taken as stored save.known
``writer_sample_seconds`` none: between two looks at the job's files  save.writers
========================  ==========================================  ======================

Fields without an option are constants of the design, kept here so that a test or a
benchmark passes a smaller one instead of reaching into a module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .budget import DEFAULT_MAX_BYTES_IN_FLIGHT
from .format.manifest import MAX_CHUNK_SIZE
from .format.paged import PAGED_ABOVE


@dataclass(frozen=True)
class EngineConfig:
    """The engine's tunables; the defaults are the agent's."""

    #: the most chunk bytes that transfers hold in memory at once, upload and restore each
    max_bytes_in_flight: int = DEFAULT_MAX_BYTES_IN_FLIGHT
    #: big files are stored as content-addressed chunks of this size
    chunk_size: int = 8 << 20
    #: files smaller than this travel in packs (0: no packs)
    pack_threshold: int = 1 << 20
    #: a pack is sealed and stored once it holds this many bytes
    pack_target: int = 16 << 20
    #: a manifest of more entries than this is paged (format 4)
    paged_above: int = PAGED_ABOVE
    #: transfers at once; None: the store's own figure
    concurrency: int | None = None
    #: seconds between two progress reports of one transfer
    progress_seconds: float = 5.0
    #: keys per page of a listing (S3's maximum, and its default)
    list_page: int = 1000
    #: bytes per read while a file is hashed
    read_size: int = 8 << 20
    #: the kernel's id of this boot: a warm restart trusts the local index only within one
    boot_id_path: Path = Path("/proc/sys/kernel/random/boot_id")
    #: needed chunks of one pack closer than this are read by one ranged GET (the gap is
    #: read and dropped: cheaper than one more request's latency)
    coalesce_gap: int = 1 << 20
    #: one ranged GET reads at most about this much
    max_range: int = 4 << 20
    #: chunk bytes in one batch of packed files at most (two batches are held at once)
    pack_batch_bytes: int = 16 << 20
    #: staging files open at once during a restore
    max_open_files: int = 64
    #: at most this many bytes are copied under the save-point lock in one freeze
    copy_budget: int = 256 << 20
    #: a save that holds the job's lock this long is reported while a freeze waits for it
    long_save_seconds: float = 5.0
    #: freezes tried when files keep changing in place after each one
    freeze_attempts: int = 3
    #: a chunk this process uploaded is trusted to still be in the store for this long
    upload_trust_seconds: float = 3600.0
    #: seconds between two looks at the job's open files and maps
    writer_sample_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be in (0, {MAX_CHUNK_SIZE}], not {self.chunk_size}")
        at_least = (
            ("max_bytes_in_flight", self.max_bytes_in_flight, 1),
            ("pack_target", self.pack_target, 1),
            ("list_page", self.list_page, 1),
            ("read_size", self.read_size, 1),
            ("max_range", self.max_range, 1),
            ("pack_batch_bytes", self.pack_batch_bytes, 1),
            ("max_open_files", self.max_open_files, 1),
            ("freeze_attempts", self.freeze_attempts, 1),
            ("concurrency", 1 if self.concurrency is None else self.concurrency, 1),
            ("pack_threshold", self.pack_threshold, 0),
            ("paged_above", self.paged_above, 0),
            ("progress_seconds", self.progress_seconds, 0),
            ("coalesce_gap", self.coalesce_gap, 0),
            ("copy_budget", self.copy_budget, 0),
            ("upload_trust_seconds", self.upload_trust_seconds, 0),
            ("writer_sample_seconds", self.writer_sample_seconds, 0),
        )
        for name, value, least in at_least:
            if value < least:
                raise ValueError(f"{name} must be at least {least}, not {value}")


#: the agent's defaults: what a piece uses when it is given no config
DEFAULTS = EngineConfig()
