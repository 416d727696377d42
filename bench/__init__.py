"""The benchmark harness, grouped by concern.

* :mod:`bench.harness`: running a benchmark (flags, the run directory, workers, Ray, pinned
  numerics, resume and faults, export and score for methods run elsewhere);
* :mod:`bench.report`: tables, figures, the report page, comparing runs, paired differences,
  the judges' tables and their validation;
* :mod:`bench.gpu`: the GPU battery (``make gpu-check``);
* :mod:`bench.studies`: training studies (held-out curves of CE/GFC, the prior's quality).

``python -m bench.run``, ``bench.compare``, ``bench.paired``, ``bench.export`` and
``bench.score`` are the documented commands' short names (modules that call the real one's
``main``); ``python -m bench.report`` is the report package's ``__main__``; the ``facefill``
command (:mod:`bench.console`) reaches every command.
"""
