"""Which modules of this package are the job API: what ``import checkpoint`` loads, all of
it standard library only and Python 3.9+.

``spot-agent job-api-path`` copies exactly these files into a directory of their own, for
``PYTHONPATH``, so that any interpreter (a job's venv, conda, an image's older Python) gets
``import checkpoint`` without the agent and without the engine beside it.
``tests/integration/test_job_api_path.py`` checks that ``import checkpoint`` loads these
modules and no others.
"""

#: the job API's modules, by file name without ``.py``
API_MODULES = ("__init__", "_fsutil", "_version", "api", "errors", "protocol", "savelock")
