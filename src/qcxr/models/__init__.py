"""Flax models: backbones, heads and the classifier that joins them."""
