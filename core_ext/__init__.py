"""Compiled kernels of yidi. Private: use engine.core.kernels."""
