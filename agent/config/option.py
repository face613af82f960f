"""What an option of the agent is: its flag, environment variable, help, parser and
default; how argparse gets it, and how its value is resolved (option, environment, default)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .parsers import ConfigError


@dataclass(frozen=True)
class Option:
    flag: str
    env: str
    help: str
    parse: Callable[[str], Any]
    default: str | None = None
    metavar: str | None = None
    switch: bool = False  # a flag without a value: present means "true"

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def setting(self) -> str:
        return f"{self.flag} ({self.env})"


def state_home(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_STATE_HOME") or os.path.join(
        environ.get("HOME") or "/tmp", ".local", "state"
    )
    return Path(base) / "spot-agent"


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...]) -> None:
    for opt in options:
        shown = f" [default: {opt.default}]" if opt.default is not None else ""
        if opt.switch:
            parser.add_argument(
                opt.flag,
                dest=opt.dest,
                action="store_const",
                const="true",
                default=None,
                help=f"{opt.help}; env {opt.env}=true",
            )
            continue
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            default=None,
            metavar=opt.metavar,
            help=f"{opt.help}; env {opt.env}{shown}",
        )


def resolve(opt: Option, args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    raw = getattr(args, opt.dest, None)
    if raw is None:
        raw = environ.get(opt.env) or opt.default
    if raw is None:
        return None
    try:
        return opt.parse(raw)
    except ValueError as exc:
        raise ConfigError(opt.setting, str(exc)) from None
