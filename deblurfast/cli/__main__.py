"""`python -m deblurfast.cli` (what torchrun runs): the `deblurfast` command."""

import sys

from . import main

sys.exit(main())
