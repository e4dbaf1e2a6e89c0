#!/usr/bin/env python3
"""A real FHIR client library (fhirpy) against a running Salus: create, read, update and
search with paging. Environment: SALUS_FHIR_BASE (…/fhir/R4) and SALUS_TOKEN. Prints one
JSON line of what it saw; exits non-zero on any failure, 2 when fhirpy is not installed."""
import json
import os
import sys

try:
    from fhirpy import SyncFHIRClient
except Exception as e:  # pragma: no cover
    print(f"the fhirpy package is not installed ({e}); run: pip install fhirpy", file=sys.stderr)
    sys.exit(2)

client = SyncFHIRClient(os.environ["SALUS_FHIR_BASE"], authorization="Bearer " + os.environ["SALUS_TOKEN"])

made = []
for i, given in enumerate(["Ann", "Ben", "Cat"]):
    p = client.resource(
        "Patient",
        identifier=[{"system": "urn:fhirpy", "value": f"FP-{i}"}],
        name=[{"family": "Clientson", "given": [given]}],
        gender="female" if i != 1 else "male",
        birthDate=f"199{i}-01-0{i + 1}",
    )
    p.save()
    assert p["id"], p
    made.append(p["id"])

read = client.reference("Patient", made[0]).to_resource()
assert read["name"][0]["given"] == ["Ann"], read
read["birthDate"] = "1989-12-31"
read.save()
again = client.reference("Patient", made[0]).to_resource()
assert again["birthDate"] == "1989-12-31", again
assert again["meta"]["versionId"] == "2", again

# Paging: two per page, fetch_all follows the next links.
found = client.resources("Patient").search(family="clientson").limit(2).fetch_all()
ids = [p["id"] for p in found]
assert sorted(ids) == sorted(made), (ids, made)
males = client.resources("Patient").search(family="clientson", gender="male").fetch()
assert [p["id"] for p in males] == [made[1]], males
first = client.resources("Patient").search(identifier="urn:fhirpy|FP-2").first()
assert first["id"] == made[2], first

print(json.dumps({"created": made, "found": ids, "version": again["meta"]["versionId"]}))
