"""Comparison methods: one module each (client side + strategy), registered by name."""

from baselines import fedavg  # noqa: F401
