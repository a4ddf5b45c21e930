"""``python -m hpelib.study STUDY.yaml ...``: see :mod:`hpelib.study`."""
import sys

from .runner import main

sys.exit(main())
