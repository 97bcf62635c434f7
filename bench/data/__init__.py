"""Stage 1, data: image sets, decoding, the concept vocabulary, the synthetic world and the real loaders."""
