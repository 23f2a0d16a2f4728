import sys

from gannet.cli.main import main

sys.exit(main())
