"""`python -m tagging AUDIO... --model WHAT`: the command of `tagging.command`."""

import sys

from tagging.command import main

if __name__ == "__main__":
    sys.exit(main())
