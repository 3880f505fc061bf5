"""Scoring trained models: held-out clips, every task against its baseline and its tokenizer's
ceiling (`scores`), the project's digit classifier (`digits`) and the feature extractors of the
tokenizer bench (`features`: LPIPS, I3D for FVD, Inception)."""
