"""The CUDA backend: lowers a shape-specialized IR graph to kernel launches and cuBLAS calls
(``build``), picks tactics by timing them (``autotune``) and runs the result with one stream
and CUDA graph replay (``executor``)."""
