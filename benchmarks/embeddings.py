"""Item embeddings of trained checkpoints by popularity group; see recbole_sracl/benchmark/embeddings.py.

    python benchmarks/embeddings.py --dataset=Amazon_Office --data_path=/tmp/data --checkpoint NAME=PATH ...
"""

import sys

from recbole_sracl.benchmark.embeddings import main

if __name__ == "__main__":
    sys.exit(main())
