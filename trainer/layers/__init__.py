"""Keras layers of the model zoo, all registered under the ``funnelrank`` package name."""
