"""Models bundled with rtxrt, built from code so that no binary model lives in the package."""
from .default_model import DEFAULT_MODEL_NAME, default_model

__all__ = ["DEFAULT_MODEL_NAME", "default_model"]
