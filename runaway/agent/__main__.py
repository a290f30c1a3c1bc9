"""``python -m runaway.agent``: the agent from the source tree (hosts run the bundle)."""
import sys

from .attach import main

sys.exit(main(sys.argv[1:]))
