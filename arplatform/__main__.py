"""python -m arplatform <command> …: the same as the `arplatform` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
