"""check_schema.py SCHEMA.json LINES.jsonl: every line is valid under the JSON Schema.

Prints "checked N" and one line per error ("line K: ..."); exits 1 on any error.
"""
import json
import sys

import jsonschema

schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
lines = [l for l in open(sys.argv[2]) if l.strip()]
bad = 0
for n, l in enumerate(lines, 1):
    for e in v.iter_errors(json.loads(l)):
        bad += 1
        print("line %d: %s: %s" % (n, e.message[:200], l[:200]))
print("checked", len(lines))
sys.exit(1 if bad else 0)
