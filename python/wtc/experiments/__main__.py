"""``python -m wtc.experiments RUN [RUN ...] --evaluation JSON``: one job as its own process (what
the local executor starts); see :func:`wtc.experiments.jobs.main`. It lives here, not under
``python -m wtc.experiments.jobs``, because the package imports ``jobs`` before runpy would run
it as ``__main__`` (a RuntimeWarning at the top of every job's log)."""

import sys

from wtc.experiments.jobs import main

sys.exit(main())
