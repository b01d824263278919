"""Allow `python -m genesis_jax.cli`."""

import sys

from genesis_jax.cli import main

sys.exit(main())
