"""Whole runs: in one process, through run.py, in Ray simulations and real deployments (the
slow ones run with --run-slow)."""
