"""``python -m paygrid.cli``: the supervisor starts each role this way."""

from paygrid.cli import app

app()
