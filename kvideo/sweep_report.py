"""``python -m kvideo.sweep_report``: a stable command; the tool is ``kvideo.tools.sweep_report``."""

import sys

from kvideo.tools.sweep_report import main

if __name__ == "__main__":
    sys.exit(main())
