"""The local single-node Kafka broker, topic administration, and the ``kafka``/``topics`` commands.

Modules: ``settings`` (KAFKA_ settings), ``config`` (pure rendering of broker and log
configuration), ``jars`` (Kafka runtime from the committed pom, cached), ``local`` (start,
stop and status of the broker process), ``admin`` (metadata probes), ``topics`` (idempotent
topic creation others can call), ``cli`` (click commands).
"""
