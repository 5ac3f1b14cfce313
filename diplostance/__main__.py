import sys

from diplostance.cli import main

sys.exit(main())
