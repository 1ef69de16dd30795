"""``python -m microfactory``: the same command as the ``microfactory`` console script."""

from microfactory.cli import app

app()
