"""`python -m torchpredict` is the `torchpredict` command."""

import sys

from torchpredict.cli import main

sys.exit(main())
