"""Reads one patient's whole record through the FHIR facade with fhirpy, as published.

    python3 read_record.py BASE_URL API_KEY PATIENT_ID [PAGE_SIZE]

BASE_URL is the facade's base (http://127.0.0.1:8080/fhir/demo), PATIENT_ID a facade id
(epic-main.123). Reads the Patient, searches Observation?patient=... letting fhirpy follow
every page, runs Patient/{id}/$everything and follows its `next` links through the same
client, then prints one JSON object:

    {"patient_id": "...", "observations": ["id", ...], "everything": ["Type/id", ...]}

Ids are listed in the order read, duplicates kept, so the caller can tell a page repeated.
Exits non-zero (with fhirpy's own error) on anything the library refuses.
"""

import json
import sys

from fhirpy import SyncFHIRClient


def main() -> None:
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    base, key, patient_id = sys.argv[1:4]
    page_size = int(sys.argv[4]) if len(sys.argv) == 5 else 10
    client = SyncFHIRClient(base, authorization=f"Bearer {key}")

    patient = client.reference("Patient", patient_id).to_resource()
    if patient.resourceType != "Patient" or patient.id != patient_id:
        sys.exit(f"read Patient/{patient_id} answered {patient.resourceType}/{patient.id}")

    # Iterating a search set is fhirpy's paging: it follows Bundle.link[next] to the end.
    search = client.resources("Observation").search(patient=patient_id).limit(page_size)
    observations = [obs.id for obs in search]

    # fhirpy has no paging helper for operations: the Bundle's next link goes back through
    # the same client, which checks that it stays on the configured base URL.
    everything = []
    bundle = client.execute(
        f"Patient/{patient_id}/$everything", method="get", params={"_count": page_size}
    )
    while True:
        if bundle.get("resourceType") != "Bundle":
            sys.exit(f"$everything answered {bundle.get('resourceType')}, not a Bundle")
        for entry in bundle.get("entry", []):
            res = entry["resource"]
            everything.append(f"{res['resourceType']}/{res['id']}")
        next_url = next(
            (link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"),
            None,
        )
        if not next_url:
            break
        bundle = client.execute(next_url, method="get")

    print(
        json.dumps(
            {"patient_id": patient.id, "observations": observations, "everything": everything}
        )
    )


if __name__ == "__main__":
    main()
