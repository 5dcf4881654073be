"""`python -m flayer.deploy local ...`: see flayer.deploy.cli."""

import sys

from flayer.deploy.cli import main

sys.exit(main())
