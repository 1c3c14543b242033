"""Prometheus metrics, one registry per :class:`~lifesigns.Lifesigns`."""

from .core import CONTENT_TYPE, CoreMetrics, render

__all__ = ["CONTENT_TYPE", "CoreMetrics", "render"]
