"""FLAYER: layer-wise local initialization, adaptive rates, masked upload and aggregation."""
