"""Reporting and comparing runs: tables (:mod:`.tables`), figures (:mod:`.figures`), the
self-contained report page (:mod:`.page`), the judges' tables (:mod:`.judge_tables`), run
comparison (:mod:`.compare`), paired differences (:mod:`.paired`) and the judges' validation
(:mod:`.judge_validation`). ``python -m bench.report RUN`` rebuilds a run's tables, figures and
report page."""
