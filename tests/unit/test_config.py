"""Settings of ``spot-agent run``: parsed and validated in-process."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from agent.cli import build_parser
from agent.config import ConfigError, Settings, default_upload_reserve, load_settings


def settings(tmp_path: Path, *args: str, **env: str) -> Settings:
    parsed = build_parser().parse_args(["run", *args])
    return load_settings(parsed, ["job"], {"XDG_STATE_HOME": str(tmp_path), **env})


@pytest.mark.parametrize(
    "grace, reserve",
    [(10, 10 / 3), (30, 10), (120, 10), (3, 1)],  # docker stop, ECS, Fargate Spot, tiny
)
def test_default_reserve_fits_any_grace_period(
    tmp_path: Path, grace: float, reserve: float
) -> None:
    s = settings(tmp_path, "--grace-period", f"{grace}s")
    assert s.upload_reserve == pytest.approx(reserve)
    assert s.upload_reserve < s.grace_period
    assert default_upload_reserve(grace) == pytest.approx(reserve)


def test_docker_grace_period_from_the_environment_starts(tmp_path: Path) -> None:
    s = settings(tmp_path, SPOT_AGENT_GRACE_PERIOD="10")
    assert s.grace_period == 10 and s.upload_reserve < 10


def test_an_explicit_reserve_must_still_fit(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--upload-reserve \(SPOT_AGENT_UPLOAD_RESERVE\)"):
        settings(tmp_path, "--grace-period", "10s", "--upload-reserve", "10s")
    assert settings(tmp_path, "--upload-reserve", "2s").upload_reserve == 2


def test_a_zero_grace_period_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--grace-period"):
        settings(tmp_path, "--grace-period", "0")


def test_sync_signal_defaults_to_sigusr1_and_can_be_chosen(tmp_path: Path) -> None:
    assert settings(tmp_path).sync_signal == signal.SIGUSR1
    assert settings(tmp_path, "--sync-signal", "USR2").sync_signal == signal.SIGUSR2
    assert settings(tmp_path, SPOT_AGENT_SYNC_SIGNAL="SIGRTMIN").sync_signal == signal.SIGRTMIN


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGCHLD", "SIGKILL", "SIGSTOP", "SIGINT", "NOPE"])
def test_sync_signal_cannot_be_one_the_agent_owns(tmp_path: Path, sig: str) -> None:
    with pytest.raises(ConfigError, match=r"^--sync-signal \(SPOT_AGENT_SYNC_SIGNAL\): "):
        settings(tmp_path, "--sync-signal", sig)


def test_job_exit_75_remap_is_opt_in(tmp_path: Path) -> None:
    assert settings(tmp_path).job_exit_75_as is None
    assert settings(tmp_path, "--job-exit-75-as", "1").job_exit_75_as == 1
    assert settings(tmp_path, SPOT_AGENT_JOB_EXIT_75_AS="0").job_exit_75_as == 0
    for bad in ("256", "-1", "x"):
        with pytest.raises(ConfigError, match=r"^--job-exit-75-as"):
            settings(tmp_path, "--job-exit-75-as", bad)


def test_help_explains_the_reserve_the_sync_signal_and_the_remap() -> None:
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    text = " ".join(run.format_help().split())
    assert "a third of --grace-period, at most 10s" in text
    assert "--sync-signal" in text and "SIGUSR1 is forwarded" in text
    assert "--job-exit-75-as" in text and "79" in text
