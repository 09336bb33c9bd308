"""``celery_health``: the cluster's verdict for exec probes and scripts."""
