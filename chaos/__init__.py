"""Fault injection against real processes: ``python -m chaos --help``.

Starts Redis, ``aragora serve`` instances, SDK agents and a submitter on loopback,
injects faults on a seeded schedule and counts every task at the end.
"""
