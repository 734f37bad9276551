"""Backbones: frozen pretrained models with their preprocessors and fingerprints."""
