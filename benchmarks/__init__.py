"""Benchmarks (``make bench``). Each ``bench_*.py`` module has a ``main()`` that prints its
results, medians and ratios against the baseline named in its issue, measured in the same run."""
