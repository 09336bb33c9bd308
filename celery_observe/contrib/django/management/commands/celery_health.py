"""``python manage.py celery_health [--verbose] [--json]``: ``celery observe health`` in Django.

The same verdict, printed by the same renderer, with the same exit codes (0 healthy,
1 degraded, 2 unhealthy), so an exec probe or a script can use either; this one needs no
``-A proj`` because it finds the project's Celery app through the settings.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser, ArgumentTypeError
from typing import Any, ClassVar

from django.core.management.base import BaseCommand, CommandError

from celery_observe.cluster.cli import _render_health
from celery_observe.cluster.client import Cluster
from celery_observe.cluster.verdict import EXIT_CODES, HEALTHY, UNHEALTHY
from celery_observe.config import at_least, positive_seconds
from celery_observe.contrib.django.celery_app import project_app


def _seconds(text: str) -> float:
    try:
        return positive_seconds("S", float(text))
    except ValueError:
        raise ArgumentTypeError(f"expected seconds greater than 0, got {text!r}") from None


def _depth(text: str) -> int:
    try:
        return at_least("N", 0, int(text))
    except ValueError:
        raise ArgumentTypeError(f"expected a whole number of 0 or more, got {text!r}") from None


class Command(BaseCommand):  # type: ignore[misc]  # Django ships no type hints
    help = ("The Celery cluster's health: healthy (exit 0), degraded (exit 1) or unhealthy "
            "(exit 2), with a recommendation for each problem.")
    # A probe measures Celery: a system check failing would exit 1, read as "degraded".
    requires_system_checks: ClassVar[list[str]] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> ArgumentParser:
        # "resolve" lets -v mean --verbose, as in `celery observe health -v`; Django's own
        # -v (--verbosity N) keeps its long form.
        parser: ArgumentParser = super().create_parser(prog_name, subcommand,
                                                       conflict_handler="resolve", **kwargs)
        return parser

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("-v", "--verbose", action="store_true",
                            help="Show every worker (as --verbosity 2 does).")
        parser.add_argument("--json", action="store_true", dest="as_json",
                            help="Print the verdict as JSON for scripts.")
        parser.add_argument("--timeout", type=_seconds, default=1.0, metavar="S",
                            help="Seconds to wait for a known worker that does not answer "
                                 "(default 1).")
        parser.add_argument("--discovery-timeout", type=_seconds, default=0.25, metavar="S",
                            help="Seconds to collect replies when no worker is known "
                                 "(default 0.25).")
        parser.add_argument("--queue-threshold", type=_depth, default=1000, metavar="N",
                            help="Queue depth above which the cluster is degraded "
                                 "(default 1000).")
        parser.add_argument("-Q", "--queue", action="append", default=[], dest="queues",
                            metavar="NAME", help="Also report this queue (repeatable).")

    def handle(self, *args: Any, **options: Any) -> None:
        with Cluster(project_app(), timeout=options["timeout"],
                     discovery_timeout=options["discovery_timeout"],
                     queue_threshold=options["queue_threshold"], use_cache=False,
                     queues=options["queues"]) as cluster:
            verdict = cluster.health()
        verbosity = options.get("verbosity", 1)
        if options["as_json"]:
            self.stdout.write(json.dumps(verdict, indent=2, sort_keys=True, default=str))
        elif verbosity > 0:
            self.stdout.write(_render_health(verdict, options["verbose"] or verbosity > 1))
        code = EXIT_CODES.get(verdict["status"], EXIT_CODES[UNHEALTHY])
        if code != EXIT_CODES[HEALTHY]:
            # Django's manage.py exits with a CommandError's returncode; call_command()
            # callers get an exception they can catch instead of a SystemExit.
            raise CommandError(f"Celery is {verdict['status']}", returncode=code)
