"""``python -m emb_opt.report``: the report CLI (``emb_opt.report.cli``)."""
import sys

from emb_opt.report.cli import main

sys.exit(main())
