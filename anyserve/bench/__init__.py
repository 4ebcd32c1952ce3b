"""``anyserve bench``: WSGI servers side by side on one app.

Importing this package imports nothing heavy; rich and psutil (the ``bench``
extra) are imported when a bench runs.
"""
