"""Scaling laws: their forms, fits, predictions and uncertainty.

Pure numpy / scipy / scikit-learn: this package knows nothing of databases, torch or HTTP.
Every law is a scikit-learn style estimator (``fit`` returns self and sets trailing-underscore
attributes; ``predict`` checks it is fitted) and round-trips through a JSON-safe record
(``to_record`` / ``law_from_record``) so that ``db`` can store it without knowing its form.
"""
