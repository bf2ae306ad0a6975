"""Reports: matplotlib figures and tables built from metrics computed elsewhere."""
from .figures import confusion_figure, plot_lr_find, write_confusion, write_per_class

__all__ = ["write_confusion", "confusion_figure", "write_per_class", "plot_lr_find"]
