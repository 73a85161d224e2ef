"""Compare models/variants over several seeds on one dataset; see recbole_sracl/benchmark/compare.py.

    python benchmarks/compare.py --dataset=Amazon_Office --data_path=/tmp/data --variants=main,ablations --workers=2
"""

import sys

from recbole_sracl.benchmark.compare import main

if __name__ == "__main__":
    sys.exit(main())
