"""Operators' commands against a running job (issue 22, item 5), on SeaweedFS: the agent
holds a lease in the store; ``checkpoints gc`` (even with ``--no-agent-running``) and
``delete`` refuse while it is live, in one line; forced, they go on, and the agent's next
commit finds what they took and uploads it again instead of committing a checkpoint that
restore would refuse."""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path

from checkpoint.engine.format.hashes import id_of_name
from checkpoint.engine.format.jobstore import JobStore
from checkpoint.engine.store.s3 import S3Store
from checkpoint.errors import ObjectNotFound
from tests.agentproc import AgentRun, cli, start_agent
from tests.servers import SeaweedS3
from tests.stores import s3_agent_env

#: a file that never changes (its pack is known to the agent, never uploaded again) and a
#: counter saved ten times a second
JOB = textwrap.dedent("""
    import checkpoint, os, time
    checkpoint.save_bytes("constant.bin", os.urandom(300_000))
    n = 0
    while True:
        n += 1
        checkpoint.save_json("n.json", n)
        time.sleep(0.1)
""")


def commits(r: AgentRun) -> list[int]:
    return [e["sequence"] for e in r.events() if e["event"] == "sync.committed"]


def broken_checkpoints(bucket: str, job_id: str) -> dict[int, set[str]]:
    """Each stored checkpoint that names an object the store does not have."""
    store = S3Store.from_uri(f"s3://{bucket}/live")
    try:
        job = JobStore(store, job_id)
        objects = {id_of_name(o.key.rsplit("/", 1)[-1]) for o in store.list_objects(job.prefix)}
        broken = {}
        for seq in job.sequences():
            try:
                manifest = job.load_manifest(seq)
            except ObjectNotFound:  # pruned by the running agent since the listing: gone,
                continue  # not broken (a checkpoint that is stored names what it needs)
            missing = (manifest.stored_blobs() | manifest.pack_ids()) - objects
            if missing:
                broken[seq] = missing
        return broken
    finally:
        store.close()


def test_gc_and_delete_refuse_while_the_agent_runs_and_forced_ones_never_break_it(
    tmp_path: Path, s3_env: SeaweedS3, s3_bucket: tuple[str, str]
) -> None:
    bucket = s3_bucket[1]
    env = s3_agent_env(tmp_path, s3_env, f"s3://{bucket}/live")
    assert env["AWS_ENDPOINT_URL_S3"].startswith("http://127.0.0.1:")
    r = start_agent(
        tmp_path,
        ["--job-id", "live", "--sync-interval", "0.3s"],
        [sys.executable, "-c", JOB],
        env=env,
    )
    r.wait_for(lambda: len(commits(r)) >= 2, timeout=60, what="two checkpoints")

    for refused in (
        ["gc", "--no-agent-running", "--min-age", "0"],
        ["gc", "--keep", "1"],
        ["delete", "--yes"],
    ):
        out = cli(tmp_path, "checkpoints", *refused, "--job-id", "live", env=env)
        assert out.returncode == 2, (refused, out.stdout, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "job live is running (attempt 1 on" in lines[0], out.stderr
        assert "--force" in lines[0] and not out.stdout
    dry = cli(
        tmp_path, "checkpoints", "gc", "--dry-run", "--keep", "1", "--job-id", "live", env=env
    )
    assert dry.returncode == 0 and "would delete" in dry.stdout, dry.stdout + dry.stderr
    assert not broken_checkpoints(bucket, "live")

    forced = cli(tmp_path, "checkpoints", "delete", "--yes", "--force", "--job-id", "live", env=env)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "deleted job live" in forced.stdout
    after_delete = len(commits(r))
    r.wait_for(lambda: len(commits(r)) >= after_delete + 2, timeout=60, what="commits again")
    forced_gc = ["gc", "--no-agent-running", "--min-age", "0", "--force", "--job-id", "live"]
    out = cli(tmp_path, "checkpoints", *forced_gc, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    after_gc = len(commits(r))
    r.wait_for(lambda: len(commits(r)) >= after_gc + 2, timeout=60, what="commits after gc")
    r.signal(signal.SIGTERM)
    assert r.wait(60) == 75, r.stdout + r.stderr

    # The commit after the delete found the constant file's pack gone: it did not commit,
    # and the next sync uploaded it again.
    refusals = [
        e
        for e in r.events()
        if e["event"] == "sync.failed" and "deleted by a forced gc or delete" in e["error"]
    ]
    assert refusals, r.stdout
    assert not broken_checkpoints(bucket, "live")
    restored = tmp_path / "restored"
    out = cli(
        tmp_path, "checkpoints", "restore", "--job-id", "live", "--to", str(restored), env=env
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert (restored / "constant.bin").stat().st_size == 300_000

    # The agent has exited: its lease is gone, and gc needs no force.
    out = cli(tmp_path, "checkpoints", "gc", "--keep", "1", "--job-id", "live", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
