"""The scoring core shared by the model service and the trainer: a model version loaded from
the BentoML store and compiled (:mod:`scoring.model`), its families' scorers
(:mod:`scoring.forest`, :mod:`scoring.classifier`), its reasons (:mod:`scoring.explain`) and
a file of claims scored in order with the stream's member history (:mod:`scoring.score_file`).
The service serves it and the trainer judges the champion with it, so neither imports the
other.
"""
