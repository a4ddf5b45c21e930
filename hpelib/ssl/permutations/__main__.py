"""``python -m hpelib.ssl.permutations``: regenerate the shipped permutation files."""
from . import write_shipped

for path in write_shipped():
    print(path)
