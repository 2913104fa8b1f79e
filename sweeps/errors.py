"""The exception root of the sweeps package.

Every error that ``sweeps`` raises on purpose derives from :class:`SweepError`, so the API and
the CLI can turn it into one readable line (or an RFC 9457 problem body) instead of a stack trace.
"""


class SweepError(Exception):
    """Root of every error the sweeps package raises on purpose."""


class CorpusError(SweepError):
    """A corpus cannot be read, built or validated (missing files, bad .bin, empty split, ...)."""


class CorpusBuildError(CorpusError):
    """Building a corpus cache failed (disk, permissions, the tokenizer): the message is one line
    naming the cache folder and the cause; the original exception is chained."""


class TrainError(SweepError):
    """A cell cannot be trained as asked (bad shapes, schedule length, learning rates, ...)."""
