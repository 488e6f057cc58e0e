"""Event-driven AI: consume events from a broker, enrich them with a task, publish them on.

:class:`lockgate.events.consumer.EventConsumer` over transports from
:func:`lockgate.events.transports.open_transport` (NATS JetStream, Redis
Streams, RabbitMQ). Kafka is documented in ``transports`` but not built here
(no broker on this machine to test against).
"""
