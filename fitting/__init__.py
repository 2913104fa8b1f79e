"""Scaling laws: their forms, fits, predictions and uncertainty.

Pure numpy / scipy / scikit-learn: this package knows nothing of databases, torch or HTTP.
Every law is a scikit-learn style estimator (``fit`` returns self and sets trailing-underscore
attributes; ``predict`` checks it is fitted) and round-trips through a JSON-safe record
(``to_record`` / ``law_from_record``) so that ``db`` can store it without knowing its form.

Modules (import them directly; this package file imports nothing, so that ``fitting.errors``
stays cheap for the CLI): ``runs`` (RunSet), ``optimum`` (group optima), ``hyper`` (HyperLaw),
``loss`` (LossLaw), ``schedules`` (lr_schedule), ``trajectory`` (MultiPowerLaw, MomentumLaw,
LossCurve), ``critical`` (CriticalBatchLaw), ``validate`` (extrapolation_check), ``registry``
(law_from_record, extrapolation_factor), ``presets`` (PRESETS).
"""
