"""The JIT: specializes a portable .rtxir to the GPU it finds, and the runtime cache that keeps the result."""
