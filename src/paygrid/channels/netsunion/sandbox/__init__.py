"""NetsUnion sandbox (网联沙箱): a separate HTTP server modelling the platform and its banks.

``python -m paygrid.channels.netsunion.sandbox --data-dir DIR [--host H] [--port 8104]``
"""

from paygrid.channels.netsunion.credentials import DEFAULT_PORT, load_or_create_credentials
from paygrid.channels.netsunion.sandbox.app import create_app, run

__all__ = ["DEFAULT_PORT", "create_app", "load_or_create_credentials", "run"]
