import sys

from shopgate.cli import main

sys.exit(main())
