"""Keras losses of the paper methods, each with the equation's core beside it.

``pwiser`` (PWiseR), ``contrastive`` (AdaFTR's AdaptiveInfoNCE and ablation losses), ``kaml``
(MaskedBCE, RLURanking, KamlLoss), ``uncertainty`` (MAN's UncertaintyWeighting layer);
``global_batch`` makes batch-level losses work on the global batch under a distribution
strategy. Public surface: ``funnelrank.losses``.
"""
