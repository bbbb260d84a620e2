"""``python -m fastserver``: the command line lives in fastserver.cli."""
import sys

from fastserver.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m fastserver"))
