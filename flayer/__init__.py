"""flayer: personalized federated learning (FLAYER and pFL baselines) on Flower."""

__version__ = "0.1.0"
