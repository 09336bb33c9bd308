"""The task-processing seed's setup, observed: five queues, routes, retries, beat, load."""
