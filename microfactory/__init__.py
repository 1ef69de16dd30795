"""microfactory: shop-floor data collector and MES-lite for small workshops."""

__version__ = "0.1.0"
