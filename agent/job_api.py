"""``spot-agent job-api-path``: the job API, alone, in a directory for ``PYTHONPATH``.

The agent needs Python 3.11 and its own packages; a job's interpreter may be another one
(a venv without the agent, conda, an image's Python 3.9). The job's side of the protocol,
``import checkpoint``, is a handful of standard-library files, and the training
frameworks' callbacks a job imports on use (:data:`checkpoint.api_files.COPIED_MODULES`):
this command copies exactly those into ``DIR/checkpoint`` and prints ``DIR``. Put ``DIR``
on the job's ``PYTHONPATH`` only, not the agent's: there it would hide the agent's own
``checkpoint`` package, engine included.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from checkpoint import __version__
from checkpoint.api_files import COPIED_MODULES

from . import exits

PACKAGE = "checkpoint"


def default_dir(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """``$XDG_CACHE_HOME/spot-agent/job-api-VERSION`` (``~/.cache`` by default)."""
    cache = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "spot-agent" / f"job-api-{__version__}"


def api_sources() -> dict[str, bytes]:
    """The job API's files as this agent has them: ``{"api.py": b"..."}``."""
    package = resources.files(PACKAGE)
    return {f"{name}.py": (package / f"{name}.py").read_bytes() for name in COPIED_MODULES}


class NotAJobApiCopy(Exception):
    """``DIR/checkpoint`` exists and holds something else: it is never replaced."""


def install_job_api(into: Path) -> Path:
    """Make ``into/checkpoint`` hold exactly the job API of this agent; return ``into``.

    Idempotent: an identical copy is left alone. An older copy (only files of the job API,
    and ``__pycache__``) is replaced whole, by a rename, so an interpreter importing it at
    the time sees one version or the other. Anything else there is refused.
    """
    sources = api_sources()
    target = into / PACKAGE
    if target.exists() or target.is_symlink():
        _check_is_a_copy(target, set(sources))
        if all(_same(target / name, data) for name, data in sources.items()):
            return into
    into.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{PACKAGE}-", dir=into))
    try:
        for name, data in sources.items():
            (staging / name).write_bytes(data)
            (staging / name).chmod(0o644)
        staging.chmod(0o755)  # the job may run as another user than the one who installs
        if target.exists():
            old = staging.with_name(staging.name + ".old")
            target.rename(old)
            staging.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(target)
    except OSError:
        # another install won the race: what it wrote is this same version
        if not all(_same(target / name, data) for name, data in sources.items()):
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return into


def _check_is_a_copy(target: Path, names: set[str]) -> None:
    if target.is_symlink() or not target.is_dir():
        raise NotAJobApiCopy(f"{target} is not a directory")
    others = sorted(p.name for p in target.iterdir() if p.name not in names | {"__pycache__"})
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise NotAJobApiCopy(
            f"{target} holds files that are not the job API's ({shown}): "
            "choose another directory with --into"
        )


def _same(path: Path, data: bytes) -> bool:
    with contextlib.suppress(OSError):
        return path.read_bytes() == data
    return False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--into",
        metavar="DIR",
        type=Path,
        help="the directory to write DIR/checkpoint into "
        "(default: $XDG_CACHE_HOME/spot-agent/job-api-VERSION, ~/.cache without it)",
    )


def main(args: argparse.Namespace) -> int:
    into = (args.into or default_dir()).absolute()
    try:
        install_job_api(into)
    except (NotAJobApiCopy, OSError) as exc:
        print(f"spot-agent: error: job API not written: {exc}", file=sys.stderr)
        return exits.USAGE
    print(into)
    return 0


EPILOG = """\
example: a job in another venv (only the job gets the path; the agent keeps its own)
  spot-agent run -- env PYTHONPATH="$(spot-agent job-api-path)" venv/bin/python train.py

The directory comes before site-packages on sys.path, so its `checkpoint` is the one
imported even where the unrelated PyPI package of that name is installed.
"""

__all__ = ["EPILOG", "add_arguments", "default_dir", "install_job_api", "main"]
