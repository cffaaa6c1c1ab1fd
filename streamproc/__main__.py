import sys

from streamproc.cli.main import main

sys.exit(main())
