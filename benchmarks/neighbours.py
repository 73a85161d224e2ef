"""Agreement of the semantic neighbour files with the training split; see recbole_sracl/benchmark/neighbours.py.

    python benchmarks/neighbours.py --dataset=Amazon_Office --data_path=/tmp/data --k=10
"""

import sys

from recbole_sracl.benchmark.neighbours import main

if __name__ == "__main__":
    sys.exit(main())
