"""`python -m workers`: the same command line as `crawlq worker` (there is one worker command line, the click CLI).

The only module of `workers` that imports `crawlq_cli`: it is a command alias, never imported (tests/test_layering.py).
"""

import sys

from crawlq_cli.main import cli

cli(["worker", *sys.argv[1:]], prog_name="crawlq")
