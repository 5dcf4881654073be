"""The neural-net parts: the layer notion, the one training and evaluation loop, the models."""
