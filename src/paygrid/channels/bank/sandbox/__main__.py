"""Start the bank sandbox: prints ``bank sandbox listening on URL`` when ready."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from paygrid.channels.bank.sandbox.app import DEFAULT_PORT, run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paygrid.channels.bank.sandbox")
    parser.add_argument("--data-dir", type=Path, required=True, help="account and state")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    args = parser.parse_args(argv)
    os.umask(0o077)
    run(args.data_dir, args.host, args.port)


if __name__ == "__main__":
    main()
