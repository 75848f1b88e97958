"""``python -m kvideo.validate``: a stable command; the tool is ``kvideo.tools.validate``."""

import sys

from kvideo.tools.validate import main

if __name__ == "__main__":
    sys.exit(main())
