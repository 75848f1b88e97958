"""``python -m kvideo.export``: a stable command; the tool is ``kvideo.tools.export``."""

import sys

from kvideo.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
