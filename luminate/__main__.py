import sys

from luminate.cli import main

sys.exit(main())
