"""Reads a velo server's /metrics with the official Prometheus parser and
prints every sample as JSON lines: {"name", "labels", "value"}. Fails if the
text does not parse."""
import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
for family in text_string_to_metric_families(text):
    for s in family.samples:
        print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type}))
