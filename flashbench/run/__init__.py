"""The parts of a study run (:func:`flashbench.runner.run_study` starts one): the component cache
(:mod:`.resources`), sampling and evaluation (:mod:`.evaluation`), the teacher baselines (:mod:`.baselines`),
variant training (:mod:`.training`), the typed result row (:mod:`.rows`), the fingerprints a done marker
records (:mod:`.recipes`) and the run loop (:mod:`.runner`). Importing it does not import torch."""
