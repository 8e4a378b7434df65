"""Scoring: the BentoML model service (``scorer.service``), its HTTP client
(``scorer.client``) and the exactly-once Kafka stream worker.

Nothing is imported here so that importing the light client does not pull in BentoML.
"""
