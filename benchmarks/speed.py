"""Seconds per training epoch and peak memory of every model/mode in one process; see
recbole_sracl/benchmark/speed.py.

    python benchmarks/speed.py --dataset=Amazon_Office --data_path=/tmp/data --epochs=3
"""

import sys

from recbole_sracl.benchmark.speed import main

if __name__ == "__main__":
    sys.exit(main())
