"""`python -m tinygrad_opt`: the tinygrad-opt command line."""
import sys

from .cli import main

sys.exit(main())
