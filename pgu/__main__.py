import sys

from pgu.cli import main

sys.exit(main())
