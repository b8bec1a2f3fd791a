"""Compiled kernels of yidi. Private: use engine.kernels."""
