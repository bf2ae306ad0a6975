"""matplotlib, headless: every figure of cifarlab is drawn through `pyplot`."""
from __future__ import annotations

import sys


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use: it is slow
    to import and only figure-writing commands need it). Inside a Jupyter kernel the kernel's own
    inline backend is kept, so the figures the notebook views return are shown in the notebook."""
    import matplotlib
    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
