"""Dataset-scale jobs: one job per input in worker processes or on Ray, failures recorded and the run resumed;
the runs of ``onevision preprocess`` (selection folders, and a conversations file rewritten for packed ones)
and ``onevision encode`` (feature files and folders), planned (:mod:`.plan`) and accounted (:mod:`.report`)
alike. May import ``lmm``, ``model``, ``codec``, ``video`` and ``common``."""
