"""`python -m mer_models.tag`: the command of `mer_models.tagging.command`."""

import sys

from mer_models.tagging.command import main

if __name__ == "__main__":
    sys.exit(main())
