#!/usr/bin/env python
"""The project's manage.py, run as ``python tests/djangoproject/manage.py celery_health``.

Python puts this script's directory first on sys.path, where celery.py would shadow the
celery package (a real project has manage.py one level above its package); the repository
root goes there instead, so the settings are ``tests.djangoproject.settings``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parent.parent.parent)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.djangoproject.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
