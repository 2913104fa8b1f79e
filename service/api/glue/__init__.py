"""What the routes answer, built from ``db`` and ``fitting``: the routes only parse and return.

One module per resource, as the routes are split (``recommend``, ``laws``, ``runs``,
``sweeps``, ``predict``, ``fits``), and ``common`` for what they share. Every function takes
the database (and plain arguments), raises the packages' own errors for bad input
(``InputError`` 422, ``NotFoundError`` 404, ``FittingError`` 422) and returns the response
schemas of ``service.api.schemas``. Units as in that module.
"""
