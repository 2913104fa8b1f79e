"""The exception root of the sweeps package."""


class SweepError(Exception):
    """Root of every error the sweeps package raises on purpose (bad spec, bad corpus, ...)."""
