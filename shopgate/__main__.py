import sys

from shopgate.tool.cli import main

sys.exit(main())
