import sys

from midmix.cli import main

sys.exit(main())
