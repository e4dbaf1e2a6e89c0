#!/usr/bin/env python3
"""Validate FHIR resources with an independent implementation: the `fhir.resources` package
(pydantic models generated from the specification; its R4B models, which share R4's
Patient, Bundle, OperationOutcome and CapabilityStatement, and the clinical and
financial resources `salus synth` writes). Reads a JSON array of resources
from the file named by argv[1]; prints every failure and exits 1 if there is one; exits 2
when the package cannot be imported (a missing validator is a failure, never a skip)."""
import importlib
import json
import sys

try:
    import fhir.resources  # noqa: F401
except Exception as e:  # pragma: no cover
    print(f"the fhir.resources package is not installed ({e}); run: pip install fhir.resources", file=sys.stderr)
    sys.exit(2)

MODULES = {
    "Patient": "patient",
    "Bundle": "bundle",
    "OperationOutcome": "operationoutcome",
    "CapabilityStatement": "capabilitystatement",
    # What `salus synth` writes (tests/it/synth.rs).
    "Encounter": "encounter",
    "Observation": "observation",
    "Condition": "condition",
    "Procedure": "procedure",
    "AllergyIntolerance": "allergyintolerance",
    "MedicationRequest": "medicationrequest",
    "Immunization": "immunization",
    "CarePlan": "careplan",
    "DiagnosticReport": "diagnosticreport",
    "Coverage": "coverage",
    "Claim": "claim",
}

with open(sys.argv[1]) as f:
    resources = json.load(f)

failed = 0
for i, r in enumerate(resources):
    rt = r.get("resourceType")
    mod = MODULES.get(rt)
    if mod is None:
        print(f"[{i}] no validator model for resourceType {rt!r}")
        failed += 1
        continue
    cls = getattr(importlib.import_module(f"fhir.resources.R4B.{mod}"), rt)
    try:
        cls.model_validate(r)
    except Exception as e:
        failed += 1
        print(f"[{i}] {rt} is invalid: {e}\n{json.dumps(r)[:2000]}")
print(f"validated {len(resources)} resources, {failed} invalid")
sys.exit(1 if failed else 0)
