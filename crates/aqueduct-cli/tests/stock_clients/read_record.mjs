// Reads one patient's whole record through the FHIR facade with fhir-kit-client, as published.
//
//     node read_record.mjs BASE_URL API_KEY PATIENT_ID [PAGE_SIZE]
//
// BASE_URL is the facade's base (http://127.0.0.1:8080/fhir/demo), PATIENT_ID a facade id
// (epic-main.123). Reads the Patient, searches Observation?patient=... and runs
// Patient/{id}/$everything, following every page with the client's nextPage, then prints one
// JSON object:
//
//     {"patient_id": "...", "observations": ["id", ...], "everything": ["Type/id", ...]}
//
// Ids are listed in the order read, duplicates kept, so the caller can tell a page repeated.
// Exits non-zero (with the library's own error) on anything it refuses.

import { Client } from 'fhir-kit-client';

const [base, key, patientId, pageArg] = process.argv.slice(2);
if (!base || !key || !patientId) {
  console.error('usage: node read_record.mjs BASE_URL API_KEY PATIENT_ID [PAGE_SIZE]');
  process.exit(2);
}
const pageSize = Number(pageArg ?? 10);

const client = new Client({
  baseUrl: base,
  customHeaders: { Authorization: `Bearer ${key}` },
});

function bundleOf(what, b) {
  if (!b || b.resourceType !== 'Bundle') {
    throw new Error(`${what} answered ${b?.resourceType}, not a Bundle`);
  }
  return b;
}

async function main() {
  const patient = await client.read({ resourceType: 'Patient', id: patientId });
  if (patient.resourceType !== 'Patient' || patient.id !== patientId) {
    throw new Error(`read Patient/${patientId} answered ${patient.resourceType}/${patient.id}`);
  }

  const observations = [];
  let page = await client.search({
    resourceType: 'Observation',
    searchParams: { patient: patientId, _count: pageSize },
  });
  while (page) {
    for (const e of bundleOf('Observation search', page).entry ?? []) {
      if (e.search?.mode !== 'include') observations.push(e.resource.id);
    }
    page = await client.nextPage({ bundle: page });
  }

  const everything = [];
  page = await client.operation({
    name: '$everything',
    resourceType: 'Patient',
    id: patientId,
    method: 'GET',
    input: { _count: pageSize },
  });
  while (page) {
    for (const e of bundleOf('$everything', page).entry ?? []) {
      everything.push(`${e.resource.resourceType}/${e.resource.id}`);
    }
    page = await client.nextPage({ bundle: page });
  }

  console.log(JSON.stringify({ patient_id: patient.id, observations, everything }));
}

main().catch((err) => {
  const detail = err.response ? ` ${JSON.stringify(err.response.data)}` : '';
  console.error(`fhir-kit-client: ${err.message}${detail}`);
  process.exit(1);
});
