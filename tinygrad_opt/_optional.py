"""Optional dependencies (scikit-learn, matplotlib, tqdm): import them or name the extra."""
import importlib

EXTRA = "pip install 'tinygrad_opt[examples]'"


class MissingDependency(ImportError):
    """An optional package that a feature needs is not installed."""


def require(module, purpose):
    """Import `module` or raise MissingDependency naming the package and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"sklearn": "scikit-learn"}.get(module, module)
        raise MissingDependency(f"{purpose} needs {package}, which is not installed; "
                                f"install the extra: {EXTRA}") from None
