"""``python -m kvideo.caption``: a stable command; the tool is ``kvideo.tools.caption``."""

import sys

from kvideo.tools.caption import main

if __name__ == "__main__":
    sys.exit(main())
