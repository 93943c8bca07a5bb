# SPDX-License-Identifier: GPL-3.0-or-later
"""`python -m fuse4d ...`."""
from fuse4d.core.cli import main

raise SystemExit(main())
