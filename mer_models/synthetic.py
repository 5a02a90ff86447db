"""`python -m mer_models.synthetic`: the command of `mer_models.data.synthetic.command`."""

import sys

from mer_models.data.synthetic.command import main

if __name__ == "__main__":
    sys.exit(main())
