"""Reads an OpenMetrics exposition on stdin with prometheus_client's strict
parser and prints its families as JSON: {name: {"type", "help", "samples":
[[sample name, labels, value], ...]}}. Exits non-zero, with the parser's
reason, when the text is not valid OpenMetrics."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

families = {}
try:
    for family in text_string_to_metric_families(sys.stdin.read()):
        families[family.name] = {
            "type": family.type,
            "help": family.documentation,
            "samples": [[s.name, s.labels, s.value] for s in family.samples],
        }
except Exception as e:  # the parser raises ValueError and friends
    print(f"not valid OpenMetrics: {e}", file=sys.stderr)
    sys.exit(1)
json.dump(families, sys.stdout)
