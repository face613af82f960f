__doc__ = "Benchmarks (not tests): bench/run."
