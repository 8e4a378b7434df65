"""Synthetic claims: seeded generation profiles, CSV files and a Kafka producer.

Generation is a pure core (explicit parameters and a random generator in, a DataFrame out);
``producer.csvio`` and ``producer.kafka`` are the I/O shell; ``producer.cli`` wires them.
"""
