"""`python -m mer_models.export`: the command of `mer_models.tagging.export`."""

import sys

from mer_models.tagging.export import main

if __name__ == "__main__":
    sys.exit(main())
