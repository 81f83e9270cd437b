//! Writing what a message converted to into the store: the raw resources (a merge reads and
//! updates the prior Patient as stored), then the refresh requests. The mapping itself
//! ([`crate::fhir`]) knows nothing of the store; this module knows nothing of HL7 segments.

use std::sync::Arc;

use aqueduct_core::{ConnectionRef, ParseStatus, RawResource, Store};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::error::Hl7Error;
use crate::fhir::{Converted, FhirResource, convert_bytes};

/// What applying a message to the store did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    pub resources: usize,
    pub refresh_requests: usize,
    pub warnings: Vec<String>,
}

fn raw(r: &FhirResource, source_url: &str, at: DateTime<Utc>) -> Result<RawResource, Hl7Error> {
    Ok(RawResource {
        resource_type: r.resource_type.to_string(),
        logical_id: r.id.clone(),
        version_id: None,
        last_updated: None,
        source_url: source_url.to_string(),
        patient_id: r.patient_id.clone(),
        parse_status: ParseStatus::Ok,
        fetched_at: at,
        bytes: serde_json::to_vec(&r.json).map_err(|e| Hl7Error::Conversion(e.to_string()))?,
    })
}

/// The raw resources to write for a conversion. A merge updates the prior Patient as stored
/// (marked inactive, linked `replaced-by`), or writes a stub when the store does not hold it.
pub async fn resources_to_write(
    store: &Arc<dyn Store>,
    organization: &str,
    c: &Converted,
    received_at: DateTime<Utc>,
) -> Result<Vec<RawResource>, Hl7Error> {
    let conn = ConnectionRef::new(organization, c.connection.clone());
    let mut batch = c
        .resources
        .iter()
        .map(|r| raw(r, &c.source_url, received_at))
        .collect::<Result<Vec<_>, _>>()?;
    for merge in &c.merges {
        let existing = store
            .get_resource(&conn, "Patient", &merge.prior_id)
            .await?;
        let mut prior = existing
            .and_then(|s| serde_json::from_slice::<Value>(&s.bytes).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| {
                json!({ "resourceType": "Patient", "id": merge.prior_id, "identifier": [merge.prior_identifier] })
            });
        prior["active"] = json!(false);
        let link = json!({ "other": { "reference": format!("Patient/{}", merge.surviving_id) }, "type": "replaced-by" });
        match prior.get_mut("link") {
            Some(Value::Array(a)) => {
                if !a.contains(&link) {
                    a.push(link);
                }
            }
            _ => prior["link"] = json!([link]),
        }
        batch.push(raw(
            &FhirResource {
                resource_type: "Patient",
                id: merge.prior_id.clone(),
                patient_id: Some(merge.prior_id.clone()),
                json: prior,
            },
            &c.source_url,
            received_at,
        )?);
    }
    Ok(batch)
}

/// Decodes, converts and stores one message's resources (in one transaction), then enqueues
/// its refresh requests.
pub async fn apply(
    store: &Arc<dyn Store>,
    organization: &str,
    bytes: &[u8],
    received_at: DateTime<Utc>,
) -> Result<Applied, Hl7Error> {
    let c = convert_bytes(bytes)?;
    let batch = resources_to_write(store, organization, &c, received_at).await?;
    if !batch.is_empty() {
        let conn = ConnectionRef::new(organization, c.connection.clone());
        store.write_resources(&conn, &batch).await?;
    }
    for r in &c.refresh {
        store.enqueue_refresh(organization, r).await?;
    }
    Ok(Applied {
        resources: batch.len(),
        refresh_requests: c.refresh.len(),
        warnings: c.warnings,
    })
}
