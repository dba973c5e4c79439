"""Worker side: Kafka intake, Celery app, dynamic batcher, model runners and the Redis result store."""
