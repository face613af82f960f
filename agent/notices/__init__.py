"""Notices: what tells the agent to checkpoint or to stop, from wherever it comes.

- :mod:`.notice`: the one :class:`Notice` type, :class:`NoticeBoard` (each notice acted on
  once), SIGTERM as a notice, the notice file the job reads;
- :mod:`.protocol`: IMDS paths, headers and formats, each written once: the emulator
  (:mod:`agent.imds_mock`) serves at the paths it names;
- :mod:`.client`, :mod:`.tokens`, :mod:`.failures`: an IMDS client, its IMDSv2 session
  token and IMDSv1 fallback, and one-line explanations of failures;
- :mod:`.parsers`: metadata bodies to notices, pure functions;
- :mod:`.source`: the polling source; :mod:`.imds`: the source for a run's settings.

What each notice makes the agent do: docs/notices.md.
"""

from .imds import make_imds_source
from .notice import (
    INTERRUPTION,
    REBALANCE,
    SCHEDULED,
    Notice,
    NoticeBoard,
    NoticeSource,
    sigterm_notice,
    utcnow,
    write_notice_file,
    write_private_file,
)

__all__ = [
    "INTERRUPTION",
    "REBALANCE",
    "SCHEDULED",
    "Notice",
    "NoticeBoard",
    "NoticeSource",
    "make_imds_source",
    "sigterm_notice",
    "utcnow",
    "write_notice_file",
    "write_private_file",
]
