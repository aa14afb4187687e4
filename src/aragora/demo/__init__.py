"""``aragora demo``: the control plane at work on one machine, in one command.

See :mod:`aragora.demo.runner` for what runs and how it stops.
"""

from aragora.demo.runner import DEFAULT_EXAMPLES_DIR, Demo, DemoSettings, run_demo

__all__ = ["DEFAULT_EXAMPLES_DIR", "Demo", "DemoSettings", "run_demo"]
