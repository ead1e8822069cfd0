"""`python -m avel` (also what torchrun launches)."""

import sys

from avel.cli import main

sys.exit(main())
