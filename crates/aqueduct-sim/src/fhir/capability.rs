//! The CapabilityStatement at `/metadata`: what the personality claims, which is not always
//! what works (claimed-but-unsupported types, and more under the lying-capability fault).

use serde_json::{Value, json};

use super::search::LYING_PARAMS;
use crate::reply::Reply;
use crate::server::SimState;

const LYING_TYPES: &[&str] = &["Provenance", "ServiceRequest", "Specimen"];

fn param_type(name: &str) -> &'static str {
    match name {
        "patient" | "subject" | "beneficiary" => "reference",
        "date" | "created" | "birthdate" | "_lastUpdated" => "date",
        "family" | "given" | "name" => "string",
        "value-quantity" => "quantity",
        _ => "token",
    }
}

fn resource(rtype: &str, params: &[String], everything: bool) -> Value {
    let mut r = json!({
        "type": rtype,
        "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "search-type"}],
        "searchParam": params.iter().map(|p| json!({"name": p, "type": param_type(p)})).collect::<Vec<_>>(),
    });
    if everything {
        r["operation"] = json!([{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]);
    }
    r
}

pub fn statement(st: &SimState) -> Reply {
    let p = &st.personality;
    let lying = st.lying();
    let mut resources = Vec::new();
    for (t, rule) in p
        .types
        .iter()
        .filter(|(t, _)| !p.capability_omits.contains(t))
    {
        let mut params = rule.search.clone();
        params.push("_lastUpdated".into());
        if lying && t == "Observation" {
            params.extend(LYING_PARAMS.iter().map(|s| s.to_string()));
        }
        resources.push(resource(t, &params, t == "Patient" && p.everything));
    }
    let claimed = p.claimed_unsupported_types.iter().map(String::as_str);
    let lies = LYING_TYPES.iter().copied().filter(|_| lying);
    for t in claimed.chain(lies) {
        resources.push(resource(
            t,
            &["patient".to_string(), "_lastUpdated".to_string()],
            false,
        ));
    }
    for t in st
        .store
        .ctx
        .shared_types()
        .iter()
        .chain(["Binary", "Group"].iter())
    {
        resources.push(json!({"type": t, "interaction": [{"code": "read"}]}));
    }
    let auth = |n: &str| st.auth.endpoint(n);
    let mut rest = json!({
        "mode": "server",
        "security": {
            "cors": true,
            "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [
                    {"url": "authorize", "valueUri": auth("authorize")},
                    {"url": "token", "valueUri": auth("token")},
                    {"url": "revoke", "valueUri": auth("revoke")},
                    {"url": "introspect", "valueUri": auth("introspect")}
                ]
            }]
        },
        "resource": resources,
    });
    if p.batch {
        rest["interaction"] = json!([{"code": "batch"}]);
    }
    if p.bulk_export {
        rest["operation"] = json!([{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]);
    }
    let cs = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2025-06-01",
        "kind": "instance",
        "software": {"name": format!("Aqueduct EHR simulator ({})", p.name), "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": p.description, "url": st.base_url},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [rest],
    });
    Reply::fhir(200, serde_json::to_vec(&cs).unwrap_or_default())
}
