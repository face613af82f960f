"""agent.run.startup.retry_transient on a made-up clock: what is retried, for how long."""

from __future__ import annotations

import pytest

from agent.run.startup import StartupPolicy, StoreNotReady, retry_transient
from checkpoint.errors import StoreError, StoreUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(errors: list[StoreError], clock: Clock, cost: float = 0.0) -> object:
    calls = iter(errors)

    def step() -> str:
        clock.now += cost
        error = next(calls, None)
        if error is None:
            return "claimed"
        raise error

    return step


def test_transient_failures_are_waited_out_with_a_growing_back_off() -> None:
    clock = Clock()
    errors = [StoreError("503 SlowDown", transient=True)] * 7
    step = failing(errors, clock)
    assert retry_transient(step, StartupPolicy(180), clock=clock, sleep=clock.sleep) == "claimed"
    assert clock.sleeps == [1, 2, 4, 8, 16, 30, 30]


def test_when_the_time_runs_out_the_last_error_is_told_with_the_tries() -> None:
    clock = Clock()
    step = failing([StoreError("read timed out", transient=True)] * 100, clock, cost=3.0)
    with pytest.raises(StoreNotReady) as caught:
        retry_transient(step, StartupPolicy(20), clock=clock, sleep=clock.sleep)
    assert caught.value.transient and "read timed out" in str(caught.value)
    assert "--startup-timeout" in str(caught.value)
    assert sum(clock.sleeps) <= 20 and clock.sleeps[-1] <= 20 - 3 * len(clock.sleeps)
    assert caught.value.tries == len(clock.sleeps) + 1


@pytest.mark.parametrize(
    "error",
    [
        StoreUnavailable("s3://b: no such bucket"),
        StoreUnavailable("s3://b: access denied for s3:ListBucket"),
        StoreUnavailable("the request signature does not match"),
    ],
)
def test_failures_that_will_not_pass_are_raised_at_once(error: StoreError) -> None:
    clock = Clock()
    with pytest.raises(type(error)) as caught:
        retry_transient(failing([error], clock), StartupPolicy(180), clock=clock, sleep=clock.sleep)
    assert caught.value is error and clock.sleeps == []


def test_no_startup_timeout_is_one_try() -> None:
    clock = Clock()
    step = failing([StoreError("reset", transient=True)], clock)
    with pytest.raises(StoreNotReady):
        retry_transient(step, StartupPolicy(0), clock=clock, sleep=clock.sleep)
    assert clock.sleeps == []


def test_the_start_up_client_reports_a_silent_store_within_10_seconds() -> None:
    policy = StartupPolicy(180)
    options = policy.client_options()
    # a silent store accepts the connection at once, then never answers
    silent = options["max_attempts"] * options["read_timeout"]
    unreachable = options["max_attempts"] * options["connect_timeout"]
    assert max(silent, unreachable) + 1.0 < 10  # plus the SDK's back-off (at most 1 s)
