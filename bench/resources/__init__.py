"""Shared resources built once per run and read by explainers: CLIP, the captioner, the caption bank."""
