"""gristmill: a sandboxed, polyglot language-runtime service spoken to over gRPC."""

__version__ = "0.1.0"
__all__ = ["__version__"]
