"""Running a benchmark: flags (:mod:`.cli`, :mod:`.config`), the run directory (:mod:`.rundir`),
units and workers (:mod:`.workers`), in-process or Ray execution (:mod:`.execute`,
:mod:`.cluster`), pinned numerics (:mod:`.numerics`), locks and faults (:mod:`.guard`),
sweeps (:mod:`.sweep`), the entry point (:mod:`.run`), and export/score for methods run
outside the harness (:mod:`.export`, :mod:`.score`)."""
