"""The interactive explorer: one self-contained HTML page per network (see :mod:`.explorer`)."""
