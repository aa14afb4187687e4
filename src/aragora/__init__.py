"""Aragora control plane: run fleets of agents with prioritised, leased, retried tasks."""

__version__ = "0.1.0"
