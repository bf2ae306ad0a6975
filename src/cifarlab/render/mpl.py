"""matplotlib, headless: every figure of cifarlab is drawn through `pyplot`."""
from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use: it is slow
    to import and only figure-writing commands need it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
