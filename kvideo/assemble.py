"""``python -m kvideo.assemble``: a stable command; the tool is ``kvideo.tools.assemble``."""

import sys

from kvideo.tools.assemble import main

if __name__ == "__main__":
    sys.exit(main())
