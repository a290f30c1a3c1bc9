import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: see parasearch.cli

from .cli import main  # noqa: E402

sys.exit(main())
