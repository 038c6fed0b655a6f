"""Loss functions: functional cores (tensors in, scalar out) and Keras wrappers."""
