"""Tokenizers: video (B, 3, T, H, W) in [-1, 1] <-> token ids (B, t, h, w). An image is T = 1."""
