"""recbole_sracl: SRA-CL, CL4SRec and DuoRec as RecBole models, and the offline semantic pipeline.

Importing the package is cheap; RecBole, torch and the semantic stack load where they are used.
"""

from recbole_sracl.version import __version__

__all__ = ["__version__"]
