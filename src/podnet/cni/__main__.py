"""`python -m podnet.cni`: one CNI call in this process (the thin entry's fallback)."""

import sys

from podnet.cni.plugin import main

sys.exit(main())
