"""A reader that stops early (``spot-agent checkpoints list | head -1``) ends us quietly.

Python ignores SIGPIPE and raises ``BrokenPipeError`` instead, which would end a command in
a traceback, then in a second one when the interpreter flushes stdout at exit. Other CLIs
(``ls``, ``git log``) are killed by SIGPIPE there, which the shell reports as 141: so do we,
so that a script with ``set -o pipefail`` sees the same status from us as from them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from .exits import CLOSED_PIPE


def quietly(command: Callable[[], int]) -> int:
    """Run ``command`` (which prints to stdout); :data:`CLOSED_PIPE` if its reader left."""
    try:
        code = command()
        sys.stdout.flush()  # inside the try: what is still buffered may meet the closed pipe
        return code
    except BrokenPipeError:
        # Nothing more can reach the reader; point stdout at /dev/null so that the flush
        # at exit has nowhere to fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return CLOSED_PIPE
