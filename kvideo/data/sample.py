"""``python -m kvideo.data.sample``, the documented command: runs the sample corpus generator's CLI."""

import sys

from kvideo.data.datasets.sample.corpus import main

if __name__ == "__main__":
    sys.exit(main())
