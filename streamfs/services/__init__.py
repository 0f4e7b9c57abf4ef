"""Local services for development, tests and the demo: Kafka, Redis and the schema registry."""

from streamfs.services.manager import ServicesManager, ServiceStatus

__all__ = ["ServiceStatus", "ServicesManager"]
