"""Benchmarks of the control plane.

Each benchmark prints absolute numbers next to a floor measured in the same run on the
same machine, and the ratio between the two, so results from different machines can
be compared by their ratios. Run ``python -m bench --help``.
"""
