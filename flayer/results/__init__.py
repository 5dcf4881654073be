"""Run outputs: per-round and per-client metrics, summary, plots, and the report table."""
