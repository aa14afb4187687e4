"""HTTP handlers: the control plane API and the probes."""
