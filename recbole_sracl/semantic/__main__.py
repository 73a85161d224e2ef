import sys

from recbole_sracl.semantic.cli import main

sys.exit(main())
