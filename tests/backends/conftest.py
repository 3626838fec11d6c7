"""The CUDA backend's tests build zoo models; they share the models tests' fixtures."""
from tests.models.conftest import zoo_build, zoo_dir, zoo_export  # noqa: F401
