"""Features: the one place claims become model inputs, offline and online alike.

* :mod:`features.sets`: the named feature sets models are trained and served with (``v1``,
  ``v2-claim``), each a pure function of one claim.
* :mod:`features.member` and :mod:`features.codes`: point-in-time member history and code
  references, pure functions of a claim and of earlier state (:mod:`features.vector` replays
  them over a file in order); not yet a served feature set.
"""
