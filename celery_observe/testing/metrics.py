"""Reading a Prometheus page: samples keyed by (name, labels)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

#: A sample's key: its name and its labels as a frozenset of (label, value) pairs.
SampleKey = tuple[str, frozenset[tuple[str, str]]]


class Metrics(dict[SampleKey, float]):
    """The samples of one page, keyed by (name, labels), with readers by name and labels."""

    def value(self, name: str, **labels: str) -> float | None:
        """The sample with exactly these labels, or None if the page has none."""
        return self.get((name, frozenset(labels.items())))

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels``."""
        wanted = labels.items()
        return sum(value for (sample, have), value in self.items()
                   if sample == name and wanted <= have)


def parse_metrics(text: str) -> Metrics:
    """The samples of a Prometheus text page."""
    samples = Metrics()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples
