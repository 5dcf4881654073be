"""Data: sources (raw pools), partitioners, per-client splits, cache and batching."""
