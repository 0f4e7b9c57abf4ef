"""Schemas: the Confluent-compatible registry (server, client), wire format, Avro codec."""
