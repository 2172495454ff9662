"""python -m keyloom_core.cli."""

from . import main

raise SystemExit(main())
