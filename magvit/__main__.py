import sys

from magvit.cli import main

sys.exit(main())
