"""``python -m prunelab ...``: the same command line as ``prunelab ...``."""

from .faces.cli import main

if __name__ == "__main__":
    main()
