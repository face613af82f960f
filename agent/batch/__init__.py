"""AWS Batch: a job definition right for spot, and continuing a job past its last attempt.

Two halves that meet only in the job definition's environment:

- before the job (``jobdef``, ``cli``): ``spot-agent batch job-definition`` prints (or
  registers) a RegisterJobDefinition request whose retry strategy retries exactly what an
  interruption looks like to Batch:

  - exit code 75: the agent was interrupted and committed its final checkpoint;
  - a status reason starting with ``Host EC2``: the spot instance was reclaimed before the
    agent could exit (Batch reports e.g. "Host EC2 (instance i-...) terminated.");
  - anything else exits: a real failure of the job must not burn nine more attempts.

- while the job runs (``continuation``): after an interrupted attempt commits its final
  checkpoint, the agent may submit a *continuation*, a new job with the same definition,
  queue, parameters and container overrides, whose ``SPOT_AGENT_JOB_ID`` is the checkpoint
  identity of this one, so it restores the same checkpoints. Two reasons:

  - ``--continue-after-last-attempt``: Batch allows at most 10 attempts, and a multi-day
    job on spot can be interrupted more often than that; the agent interrupted on the last
    allowed attempt continues the job;
  - ``--fallback-queue Q --fallback-after N``: the agent interrupted for the Nth time
    (counted across the job's attempts and continuations, from the store) submits the
    continuation to Q (on-demand capacity) and exits 80, which the retry strategy does not
    retry: the job stops gambling on spot.

Both take a boto3 Batch client (``client``: short timeouts, it runs at shutdown), so they are
tested against moto's Batch API.
"""
