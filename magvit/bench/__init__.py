"""Benchmarks users can run: tokenizers side by side, decode speed against autoregressive decoding,
generation quality on moving digits. Each writes one table (terminal, JSON, CSV, Markdown)."""

from magvit.bench.report import Column, Table, environment, write_table

__all__ = ["Column", "Table", "environment", "write_table"]
