"""`python -m detnas ...` (also what `torchrun -m detnas` runs)."""

import sys

from detnas.cli import main

sys.exit(main())
