"""`python -m fexbench.cli ...`: the same as the `fexbench` command."""
import sys

from fexbench.cli import main

sys.exit(main())
