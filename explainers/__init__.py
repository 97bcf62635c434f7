"""Explainer adapters for fexbench; each registers through the `fexbench.explainers` entry point group."""
