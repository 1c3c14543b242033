"""The edge: pure ASGI middleware and routes that serve the probes. No framework imports."""

from .middleware import LifesignsMiddleware

__all__ = ["LifesignsMiddleware"]
