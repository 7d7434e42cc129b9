"""Dataset-scale jobs: one job per input in worker processes or on Ray, failures recorded and the run resumed;
the runs of ``onevision preprocess`` (selection folders) and ``onevision encode`` (feature files and folders),
planned (:mod:`.plan`) and accounted (:mod:`.report`) alike. May import ``model``, ``codec``, ``video`` and
``common``."""
