"""The exception root of the fitting package."""


class FittingError(Exception):
    """Root of every error the fitting package raises on purpose."""


class InsufficientDataError(FittingError):
    """The data cannot support the requested law (too few groups, one size only, ...)."""


class EdgeOptimumError(InsufficientDataError):
    """A group's best run lies on the edge of the searched grid, and the law was asked to refuse
    such data (``HyperLaw(on_edge="error")``): its optimum may lie outside the grid."""


class NotFittedError(FittingError):
    """``predict`` was called on a law that has not been fitted or loaded."""


class InvalidLawRecordError(FittingError):
    """A stored law record does not describe a law this package knows."""
