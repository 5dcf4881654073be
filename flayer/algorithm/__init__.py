"""FLAYER (Chen et al., "Optimizing Personalized Federated Learning through Adaptive
Layer-Wise Learning", IJCAI 2025): settings (settings.py, no torch), client side and server
side; flayer.algorithm.method registers them as "flayer"."""
