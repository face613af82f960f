"""Where notices come from, besides SIGTERM: the metadata service, when the settings and
the machine call for it. Choosing it sends no request; the source finds the service in
the background (:func:`agent.notices.make_imds_source`). Each source polls in its own thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .. import logs
from ..config import Settings
from ..notices import Notice, NoticeSource, make_imds_source

log = logs.get_logger()


def notice_sources(
    s: Settings, on_identity: Callable[[dict[str, Any]], None]
) -> tuple[NoticeSource, ...]:
    """The notice sources of this run; ``on_identity`` receives the instance's identity
    for the log once the metadata service answers."""
    source = make_imds_source(s, on_identity)
    return () if source is None else (source,)


def start_sources(
    sources: tuple[NoticeSource, ...], post: Callable[[Notice], None], stop: threading.Event
) -> None:
    """Each source polls in a thread of its own and ``post``s what it finds until ``stop``;
    a source that crashes is logged and ends alone: it never takes the job down."""
    for source in sources:

        def run(source: NoticeSource = source) -> None:
            try:
                source.run(post, stop)
            except Exception as exc:
                log.error("notice_source.crashed", source=source.name, error=repr(exc))

        threading.Thread(target=run, name=f"notice-{source.name}", daemon=True).start()
