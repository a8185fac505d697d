import sys

from swarmd.main import main

sys.exit(main())
