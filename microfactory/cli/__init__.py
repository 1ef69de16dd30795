"""The composition root: the ``microfactory`` command and the one-command demo.

The only layer that may import the gateway, the MES and the simulators together.
"""

from .main import app

__all__ = ["app"]
