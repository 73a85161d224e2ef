"""Validation and test metrics of every epoch's checkpoint by popularity group; see recbole_sracl/benchmark/epochs.py.

    python benchmarks/epochs.py --run=RUN.json --checkpoints=FOLDER --out=REPORT.json
"""

import sys

from recbole_sracl.benchmark.epochs import main

if __name__ == "__main__":
    sys.exit(main())
