"""The settings of a run: the typed schema, Hydra's store, composing, the checks and the
command line."""
