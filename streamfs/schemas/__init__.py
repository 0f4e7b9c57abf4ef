"""Schemas: the Confluent-compatible schema registry (server and client), wire format, Avro codec."""
