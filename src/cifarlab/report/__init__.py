"""Reports: matplotlib figures and tables built from metrics computed elsewhere."""
from .figures import write_confusion, write_per_class

__all__ = ["write_confusion", "write_per_class"]
