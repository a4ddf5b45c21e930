"""``python -m hpelib.predict``: see :mod:`hpelib.predict.cli`."""
import sys

from .cli import main

sys.exit(main())
