"""The ONNX Runtime plugin library, the one compiled part of rtxrt (everything else is in
pyproject.toml): a C trampoline with no onnxruntime or Python headers that `pip install`
compiles with the platform's C compiler. It is built as an "extension" only for setuptools'
compiler handling; it is loaded with ctypes, never imported. Without a C compiler rtxrt still
installs (optional), and rtxrt_ep compiles it at first use or keeps its Python hook.

RTXRT_PURE_WHEEL=1 leaves it out: a wheel for every platform, as installer/build_bundle.py
builds for a target machine other than its own (the library is then compiled there, at
first use, where a compiler is)."""
import os

from setuptools import Extension, setup

PLUGIN = Extension("rtxrt_ep.plugin._trampoline", optional=True, py_limited_api=False,
                   sources=["ep/rtxrt_ep/plugin/trampoline.c", "ep/rtxrt_ep/plugin/tensors.c"])

setup(ext_modules=[] if os.environ.get("RTXRT_PURE_WHEEL") == "1" else [PLUGIN])
