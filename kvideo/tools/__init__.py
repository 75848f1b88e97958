"""Command-line tools around training, kept apart from the library they drive.

``validate`` (``kvideo-validate``: probe a dataset, write a report and a blocklist), ``probe``
(what ``validate`` runs per file), ``sweep_report`` (``kvideo-sweep-report``: a sweep's table and
plot). ``validate`` finds the config tree through ``kvideo.config.compose``, so it runs the same
from a checkout or installed.
"""
