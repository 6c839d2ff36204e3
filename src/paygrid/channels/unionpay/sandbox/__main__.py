"""Start the UnionPay sandbox: prints ``unionpay sandbox listening on URL`` when ready."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from paygrid.channels.unionpay.credentials import DEFAULT_PORT
from paygrid.channels.unionpay.sandbox.app import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paygrid.channels.unionpay.sandbox")
    parser.add_argument("--data-dir", type=Path, required=True, help="credentials and state")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    args = parser.parse_args(argv)
    os.umask(0o077)  # its state holds the UnionPay signing key: owner-only files
    run(args.data_dir, args.host, args.port)


if __name__ == "__main__":
    main()
