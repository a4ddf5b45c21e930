"""The optional packages prediction uses (the ``deploy`` extra), imported on first use with a clear error."""
from __future__ import annotations

import importlib

__all__ = ["require"]

_PACKAGES = {"cv2": "opencv-python-headless<5", "av": "av"}


def require(module: str):
    """Import ``module`` (``cv2`` or ``av``); when it is missing, an ``ImportError`` saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"hpelib.predict needs the package {_PACKAGES.get(module, module)} for this; "
                          "install it with pip install 'hpelib[deploy]'") from None
