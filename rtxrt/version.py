"""The version of rtxrt, read by the file format, the cache key and the package."""

__version__ = "0.1.0"
