"""Compare the optimizers of a sweep: `python scripts/report.py --experiment NAME [--sweep ID|latest] ...`.

A thin wrapper; the logic lives in harness.report (see harness/report/cli.py for the options).
"""

import sys

from harness.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
