"""Integrations with web frameworks, one subpackage each.

Nothing here is imported by the rest of celery-observe: a subpackage imports its framework,
so only a project that uses that framework (and lists it in INSTALLED_APPS or imports it)
pays for it.
"""
