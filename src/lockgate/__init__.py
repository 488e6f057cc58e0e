"""lockgate: one governed pipeline for every model call."""

__version__ = "0.1.0"
__all__ = ["__version__"]
