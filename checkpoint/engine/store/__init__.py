"""Where bytes live: the :class:`~.base.Store` interface, a local directory and S3.

A store knows objects, not checkpoints: put (optionally create-only), get (whole or a
range), list, delete. :mod:`.s3` maps botocore's errors to one-line explanations and bounds
its retries; nothing above this room sees a botocore type.
"""
