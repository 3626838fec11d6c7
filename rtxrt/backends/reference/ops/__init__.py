"""Reference kernels, one family of operators per module; each registers in ``kernel.KERNELS`` on import."""
