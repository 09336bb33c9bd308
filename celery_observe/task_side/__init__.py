"""Imported by task code, runs wherever a task runs (a pool child under prefork).

Task metrics (TaskCounter, TaskGauge, TaskHistogram), MonitoredTask and the publish-time
stamps of producers. Importing it loads no Prometheus client and none of the worker.
"""
