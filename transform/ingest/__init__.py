"""Impression data in: the synthetic generator, CSV validation, dataset adapters and the split."""
