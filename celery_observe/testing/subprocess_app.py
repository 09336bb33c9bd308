"""The app a subprocess test worker runs: the test's app, with the test's settings applied.

``celery -A celery_observe.testing.subprocess_app worker`` imports the app named in
:data:`~.settings.APP_ENV` (``proj.celery:app``, as ``celery -A`` takes it) and updates its
configuration with the JSON object in :data:`~.settings.CONF_ENV`: the broker, backend and control
exchange the test process chose (see :mod:`.brokers`). The environment carries them
because ``celery -A`` passes a module nothing else, and because a broker password there is
out of ``ps``'s sight.
"""

from __future__ import annotations

import json
import os

from celery.app.utils import find_app

from . import filesystem  # noqa: F401 - registers observe-filesystem://, the default broker
from .settings import APP_ENV, CONF_ENV

app = find_app(os.environ[APP_ENV])
app.conf.update(json.loads(os.environ.get(CONF_ENV) or "{}"))
