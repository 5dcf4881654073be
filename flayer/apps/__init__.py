"""Flower apps: one method-agnostic ClientApp and one ServerApp."""
