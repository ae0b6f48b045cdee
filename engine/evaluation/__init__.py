"""Evaluation: `iiae eval` and its metric registry (`evaluate`), the one embedding loop (`codes`), the paper's
retrieval metrics and the translation and fidelity scores."""
