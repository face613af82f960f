"""Where notices come from, besides SIGTERM: the metadata service, when the settings and
the machine call for it. Choosing it sends no request; the source finds the service in
the background (:func:`agent.notices.make_imds_source`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import Settings
from ..notices import NoticeSource, make_imds_source


def notice_sources(
    s: Settings, on_identity: Callable[[dict[str, Any]], None]
) -> tuple[NoticeSource, ...]:
    """The notice sources of this run; ``on_identity`` receives the instance's identity
    for the log once the metadata service answers."""
    source = make_imds_source(s, on_identity)
    return () if source is None else (source,)
