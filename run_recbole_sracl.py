"""Train and evaluate a model with recbole_sracl, like RecBole's run_recbole.py.

    python run_recbole_sracl.py --model=SRACL --dataset=ml-100k
    python run_recbole_sracl.py --model=DuoRec --dataset=Amazon_Office --data_path=../shared/datasets --epochs=50
"""

import sys

from recbole_sracl.quick_start import main

if __name__ == "__main__":
    sys.exit(main())
