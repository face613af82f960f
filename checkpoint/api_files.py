"""Which modules of this package are the job API: what ``import checkpoint`` loads, all of
it standard library only and Python 3.9+.

``spot-agent job-api-path`` copies exactly these files, and the framework callbacks a job
imports on use, into a directory of their own, for ``PYTHONPATH``, so that any interpreter
(a job's venv, conda, an image's older Python) gets ``import checkpoint`` without the agent
and without the engine beside it. ``tests/integration/test_job_api_path.py`` checks that
``import checkpoint`` loads API_MODULES and no others.
"""

#: the job API's modules, by file name without ``.py``
API_MODULES = ("__init__", "_agent", "_fsutil", "_version", "api", "errors", "protocol", "savelock")
#: job API a job imports by name when it uses it (``checkpoint.hf``...): each imports its
#: training framework, which the job's interpreter has and the agent's need not
ON_USE_MODULES = ("_lightning", "hf", "lightning", "pytorch_lightning")
#: what ``spot-agent job-api-path`` copies
COPIED_MODULES = API_MODULES + ON_USE_MODULES
