"""``python -m microfactory.cli``: the same command as the ``microfactory`` console script."""

from .main import app

app()
