"""Launch ``streamfs serve`` as the CLI will once it is wired: ``python bench/online/serve.py
--port N`` (settings from the ``STREAMFS_*`` environment, like the CLI)."""

from __future__ import annotations

import argparse
import os
import sys

from streamfs.cli import resolve_settings
from streamfs.serving import command

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="streamfs")
    command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *sys.argv[1:]])
    sys.exit(command.run(args, resolve_settings(os.environ)))
