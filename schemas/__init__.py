"""Data contracts shared by every maskwatch stage: Arrow schemas, dataclasses, Kafka message formats.

Nothing here imports Ray or does I/O beyond (de)serialisation.
"""
