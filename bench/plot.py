"""Draw a bench report, from a checkout: ``python bench/plot.py REPORT.json CHART.png``.

The code is the package's, fastserver/bench/plot.py.
"""
import sys

from fastserver.bench.plot import main

if __name__ == "__main__":
    sys.exit(main())
