"""``python -m hiveling.core.worker``: the training worker the supervisor runs."""

import sys

from hiveling.core.worker.process import main

sys.exit(main())
