"""Helpers of the control-plane tests: a worker run as a separate process."""
