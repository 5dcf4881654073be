"""Each comparison method's settings, one module per method (`baselines.settings.<name>`,
a MethodSettings subclass whose default `name` is the method's).

They import no torch, Flower or data library, so that Hydra's schemas are registered and a
config is composed and checked (flayer/config/store.py finds every module here) before the methods
themselves (`baselines.<name>`) are imported. A check that needs the model's layers runs only
once the model is built, so it may import from the torch side inside `check`.
"""
