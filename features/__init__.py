"""Point-in-time features of v2 claims: pure functions of a claim and of earlier state.

One code offline (training, ``score-file``) and online (stream stages): the state a stage
keeps is the value these functions take and return, so a replay from the same state gives
the same features.
"""
