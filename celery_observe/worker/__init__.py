"""Runs in the worker's main process: the bootsteps, the Observer and all it owns.

Request hooks and the outcome rules, the recorder and history, metrics and their
exposition, probes, the HTTP server and its routes, the collectors (pool, resources,
queue depths, caches), the remote-control commands, and the receiver of task metrics
sent from pool children.
"""
