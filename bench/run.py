"""The benchmark suite, from a checkout: ``python bench/run.py [options]``.

The suite ships in the package, so that ``python -m fastserver bench`` runs
it from an installed wheel too; this runs the same code (fastserver/bench/
run.py, whose docstring explains the table) against the fastserver this
interpreter imports.  ``--help`` lists the options.
"""
import sys

from fastserver.bench.run import main

if __name__ == "__main__":
    sys.exit(main())
