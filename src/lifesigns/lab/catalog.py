"""The catalogue: product pages rendered once and cached forever (incident ``memory-leak``)."""

from __future__ import annotations

import os

_rendered: dict[str, bytes] = {}


def render_product_page(sku: str) -> bytes:
    """The product page's HTML (100 KB of it, as a rich page is)."""
    return b"<html>" + sku.encode() + os.urandom(100 * 1024) + b"</html>"


def product_page(sku: str) -> bytes:
    """The page for ``sku``, from the cache: the cache never evicts (the incident)."""
    page = _rendered.get(sku)
    if page is None:
        page = render_product_page(sku)
        _rendered[sku] = page
    return page
