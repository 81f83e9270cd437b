//! Reference resolution: what a patient's resources point at on the same server is part of the
//! record. Followed to closure up to `reference_depth` hops (cycle-safe: each resource is read
//! once per run), for every type — the patient's own types too (a cancelled Encounter that a
//! Condition points to is not in `Encounter?patient=`). Reads go in `_id=a,b,c` searches or
//! batch Bundles where the server takes them; whatever those do not bring is read one by one;
//! whatever still cannot be read is a gap, for every patient that points at it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;

use aqueduct_client::{Expect, FetchError, FhirRequest};
use aqueduct_core::{ParseStatus, RawResource};
use chrono::Utc;
use futures_util::stream::{self, StreamExt};
use url::Url;

use crate::page::{PageSource, bundle_page, raw_resource};
use crate::refs::{Found, RefTarget, parse_reference};
use crate::report::{MissingReason, SyncError};
use crate::syncer::{PatientState, Run, SyncMode, Syncer, lock};

/// Where an attachment points.
enum Attachment {
    /// `Binary/{id}` (or another `Type/id`) on the FHIR server.
    Resource(String, String),
    /// A document URL on the FHIR server's origin or an allowed document host, with the id
    /// it is kept under.
    Document(String, Url),
    /// Another host: not fetched, the token never goes there.
    Elsewhere(String),
    /// Contained, inline data, or not a URL.
    Inline,
}

/// An attachment whose body is not the size its Attachment declares.
fn size_mismatch(url: &str, got: usize, want: Option<u64>) -> FetchError {
    FetchError::new(
        aqueduct_client::FetchErrorKind::Truncated,
        url,
        format!(
            "{got} bytes, but the attachment declares {} (cut short twice; not stored)",
            want.unwrap_or(0)
        ),
    )
}

/// Why one referenced resource could not be read.
type Failure = (String, MissingReason, String);

fn failure(id: &str, e: &FetchError) -> Failure {
    let reason = if e.is_forbidden() {
        MissingReason::Forbidden
    } else {
        MissingReason::ReferenceUnresolved
    };
    (id.to_string(), reason, e.to_string())
}

impl Syncer {
    /// Fetches what the patient's resources reference, up to the configured depth.
    /// References to other servers are counted, not followed.
    ///
    /// Returns every (type, id) the record holds in this run: what the searches returned and
    /// what the references brought (reconciliation keeps all of it).
    pub(crate) async fn resolve_references(
        &self,
        run: &Run,
        pid: &str,
        st: PatientState,
    ) -> Result<HashSet<(String, String)>, SyncError> {
        let base = self.client.base().clone();
        let mut fetched = st.fetched;
        let mut found = Found {
            references: st.references.into_iter().collect(),
            attachments: st.attachments.into_iter().collect(),
            attachment_sizes: st.attachment_sizes.into_iter().collect(),
        };
        // (type, id) of an attachment → the size its Attachment declares
        let mut expected: HashMap<(String, String), u64> = HashMap::new();
        let own_types: HashSet<String> = self.resource_types().into_iter().collect();
        for _depth in 0..self.options.reference_depth {
            let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut attachment_keys: HashSet<(String, String)> = HashSet::new();
            let mut seen_now = HashSet::new();
            let mut targets: Vec<((String, String), bool)> = Vec::new();
            for r in std::mem::take(&mut found.references) {
                match parse_reference(&r, &base) {
                    RefTarget::Local {
                        resource_type, id, ..
                    } => targets.push(((resource_type, id), false)),
                    RefTarget::External(_) => {
                        run.external.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            let attachments = std::mem::take(&mut found.attachments);
            let sizes: HashMap<String, u64> = std::mem::take(&mut found.attachment_sizes)
                .into_iter()
                .collect();
            let mut documents: Vec<(String, Url)> = Vec::new();
            if self.options.fetch_binaries {
                for a in attachments {
                    let size = sizes.get(&a).copied();
                    match self.attachment(&a) {
                        Attachment::Resource(t, id) => {
                            if let Some(n) = size {
                                expected.insert((t.clone(), id.clone()), n);
                            }
                            targets.push(((t, id), true))
                        }
                        Attachment::Document(id, url) => {
                            if let Some(n) = size {
                                expected.insert(("Binary".to_string(), id.clone()), n);
                            }
                            documents.push((id, url))
                        }
                        Attachment::Elsewhere(url) => {
                            run.external.fetch_add(1, Ordering::Relaxed);
                            run.note(format!(
                                "patient {pid}: attachment on another host not fetched ({url});                                  add its origin to http.document_hosts if it is the organization's"
                            ));
                        }
                        Attachment::Inline => {}
                    }
                }
            }
            self.fetch_documents(run, pid, documents, &expected, &mut fetched)
                .await?;
            let granted = self.client.granted_scopes();
            for (key, is_attachment) in targets {
                if fetched.contains(&key) || !seen_now.insert(key.clone()) {
                    continue;
                }
                // outside the granted scopes: a gap, without asking (the server would 403)
                if let Some(g) = &granted
                    && !crate::scopes::scopes_cover(g, &key.0)
                {
                    fetched.insert(key.clone());
                    run.partial(
                        pid,
                        &key.0,
                        MissingReason::ScopeNotGranted,
                        format!(
                            "{}/{} is referenced by the record but the granted scopes do not include {}",
                            key.0, key.1, key.0
                        ),
                    );
                    continue;
                }
                // Read earlier in this run for another patient: not again — but if that read
                // failed, this patient's record misses it too.
                if lock(&run.fetched_refs).contains(&key) {
                    let failed = lock(&run.failed_refs).get(&key).cloned();
                    if let Some((reason, detail)) = failed {
                        self.reference_gap(run, pid, &key, is_attachment, reason, detail);
                    }
                    continue;
                }
                if run.mode == SyncMode::Incremental
                    && self
                        .store
                        .get_resource(&self.conn, &key.0, &key.1)
                        .await?
                        .is_some()
                {
                    continue;
                }
                if is_attachment {
                    attachment_keys.insert(key.clone());
                }
                wanted.entry(key.0).or_default().push(key.1);
            }
            if wanted.is_empty() {
                break;
            }
            let mut next_found = Found::default();
            for (rtype, ids) in wanted {
                {
                    let mut fr = lock(&run.fetched_refs);
                    for id in &ids {
                        fr.insert((rtype.clone(), id.clone()));
                    }
                }
                // a type the patient's searches cover belongs to the patient's record (a
                // cancelled Encounter the searches leave out); others (Practitioner...) are
                // shared
                let owner = own_types.contains(&rtype).then_some(pid);
                let failures = self
                    .fetch_referenced(run, &rtype, &ids, owner, &expected, &mut next_found)
                    .await?;
                for id in &ids {
                    fetched.insert((rtype.clone(), id.clone()));
                }
                if !failures.is_empty() {
                    // the monitor reads this note ("could not be fetched")
                    run.note(format!(
                        "patient {pid}: {} of {} referenced {rtype} could not be fetched",
                        failures.len(),
                        ids.len()
                    ));
                }
                for (id, reason, detail) in failures {
                    let key = (rtype.clone(), id);
                    lock(&run.failed_refs).insert(key.clone(), (reason, detail.clone()));
                    let is_attachment = attachment_keys.contains(&key);
                    self.reference_gap(run, pid, &key, is_attachment, reason, detail);
                }
                if run.aborted() {
                    return Ok(fetched);
                }
            }
            found = next_found;
        }
        Ok(fetched)
    }

    /// Where an `Attachment.url` points.
    fn attachment(&self, url: &str) -> Attachment {
        let base = self.client.base();
        let u = url.trim();
        if u.is_empty() || u.starts_with('#') || u.starts_with("data:") || u.starts_with("urn:") {
            return Attachment::Inline;
        }
        if let RefTarget::Local {
            resource_type, id, ..
        } = parse_reference(u, base)
        {
            return Attachment::Resource(resource_type, id);
        }
        // a document URL that is not `Type/id` (`{base}/documents/x`, a document host...)
        let Ok(abs) = base.join(u) else {
            return Attachment::Inline;
        };
        if !matches!(abs.scheme(), "http" | "https") {
            return Attachment::Inline;
        }
        if !self.client.may_receive_token(&abs) {
            return Attachment::Elsewhere(abs.to_string());
        }
        let last = abs
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or("");
        let id = if crate::refs::valid_id(last) {
            last.to_string()
        } else {
            crate::page::synthetic_id(abs.as_str().as_bytes())
        };
        Attachment::Document(id, abs)
    }

    /// Reads attachments given by URL (not `Binary/{id}`): kept as Binary resources with
    /// their raw content, keyed by the URL's last segment.
    async fn fetch_documents(
        &self,
        run: &Run,
        pid: &str,
        documents: Vec<(String, Url)>,
        expected: &HashMap<(String, String), u64>,
        fetched: &mut HashSet<(String, String)>,
    ) -> Result<(), SyncError> {
        let mut batch = Vec::new();
        for (id, url) in documents {
            let key = ("Binary".to_string(), id.clone());
            if fetched.contains(&key) {
                continue;
            }
            if !lock(&run.fetched_refs).insert(key.clone()) {
                let failed = lock(&run.failed_refs).get(&key).cloned();
                if let Some((reason, detail)) = failed {
                    self.reference_gap(run, pid, &key, true, reason, detail);
                }
                fetched.insert(key);
                continue;
            }
            fetched.insert(key.clone());
            let req = FhirRequest::new(url.clone())
                .resource_type("Binary")
                .template(format!(
                    "GET attachment {}{}",
                    url.origin().ascii_serialization(),
                    "/{document}"
                ))
                .expect(Expect::Any);
            let want = expected.get(&key).copied();
            let mut got = run.client.get(req.clone()).await;
            if let Ok(resp) = &got
                && want.is_some_and(|n| n != resp.body.len() as u64)
            {
                got = run.client.get(req).await; // cut short: one more try
            }
            let got = match got {
                Ok(resp) if want.is_some_and(|n| n != resp.body.len() as u64) => {
                    Err(size_mismatch(resp.url.as_str(), resp.body.len(), want))
                }
                other => other,
            };
            match got {
                Ok(resp) => batch.push(RawResource {
                    resource_type: "Binary".into(),
                    logical_id: id,
                    version_id: None,
                    last_updated: None,
                    source_url: resp.url.to_string(),
                    patient_id: None,
                    parse_status: ParseStatus::InvalidJson(format!(
                        "raw content ({})",
                        resp.content_type
                            .clone()
                            .unwrap_or_else(|| "no content type".into())
                    )),
                    fetched_at: Utc::now(),
                    bytes: resp.body.to_vec(),
                }),
                Err(e) if e.needs_reauthorization() => {
                    run.abort(e.to_string());
                    break;
                }
                Err(e) => {
                    run.note(format!("attachment {url} not fetched: {e}"));
                    let (_, reason, detail) = failure(&id, &e);
                    lock(&run.failed_refs).insert(key.clone(), (reason, detail.clone()));
                    self.reference_gap(run, pid, &key, true, reason, detail);
                }
            }
        }
        run.referenced_fetched
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.write_page(run, &batch, &Default::default()).await?;
        Ok(())
    }

    fn reference_gap(
        &self,
        run: &Run,
        pid: &str,
        key: &(String, String),
        is_attachment: bool,
        reason: MissingReason,
        detail: String,
    ) {
        let reason = match reason {
            MissingReason::ReferenceUnresolved if is_attachment => {
                MissingReason::AttachmentNotFetched
            }
            r => r,
        };
        run.partial(
            pid,
            &key.0,
            reason,
            format!("{}/{} referenced by the record: {detail}", key.0, key.1),
        );
    }

    /// Fetches referenced resources of one type; returns those that could not be read.
    async fn fetch_referenced(
        &self,
        run: &Run,
        rtype: &str,
        ids: &[String],
        owner: Option<&str>,
        expected: &HashMap<(String, String), u64>,
        found: &mut Found,
    ) -> Result<Vec<Failure>, SyncError> {
        let caps = &self.profile.capabilities;
        // Binary cannot be searched by _id on most servers; where batch works, reads of it (and
        // of types without multi-id search) go in batches instead of one request each.
        let batch_works = caps.batch && !lock(&self.probes).batch_rejected;
        let (stored, rest) =
            if batch_works && ids.len() > 1 && (rtype == "Binary" || !caps.multi_id) {
                self.fetch_batched(run, rtype, ids, owner, found).await?
            } else if caps.multi_id && rtype != "Binary" && ids.len() > 1 {
                self.fetch_by_id_search(run, rtype, ids, owner, found)
                    .await?
            } else {
                (0, ids.to_vec())
            };
        run.referenced_fetched.fetch_add(stored, Ordering::Relaxed);
        if rest.is_empty() || run.aborted() {
            return Ok(Vec::new());
        }
        // whatever the grouped reads did not bring is read on its own
        let (stored, failures) = self
            .fetch_one_by_one(run, rtype, &rest, owner, expected, found)
            .await?;
        run.referenced_fetched.fetch_add(stored, Ordering::Relaxed);
        Ok(failures)
    }

    /// `_id=a,b,c` searches; returns how many were stored and the ids they did not bring.
    async fn fetch_by_id_search(
        &self,
        run: &Run,
        rtype: &str,
        ids: &[String],
        owner: Option<&str>,
        found: &mut Found,
    ) -> Result<(u64, Vec<String>), SyncError> {
        let caps = &self.profile.capabilities;
        let mut stored = 0u64;
        let mut missing = Vec::new();
        for chunk in ids.chunks(caps.multi_id_max.max(1) as usize) {
            let joined = chunk.join(",");
            let count = chunk.len().to_string();
            let url = self
                .client
                .url(rtype, &[("_id", &joined), ("_count", &count)])?;
            let req = FhirRequest::new(url).resource_type(rtype);
            match run.client.get(req).await {
                Ok(resp) => {
                    let Ok(bundle) = resp.bundle() else {
                        run.note(format!(
                            "referenced {rtype} search: the answer is not a Bundle; reading one by one"
                        ));
                        missing.extend(chunk.iter().cloned());
                        continue;
                    };
                    let src = PageSource {
                        url: resp.url.as_str(),
                        patient_id: owner,
                        expected_type: Some(rtype),
                        fetched_at: Utc::now(),
                        collect_refs: true,
                    };
                    stored += self
                        .store_grouped_reads(run, rtype, bundle, &src, chunk, &mut missing, found)
                        .await?;
                }
                Err(e) if e.needs_reauthorization() => {
                    run.abort(e.to_string());
                    return Ok((stored, Vec::new()));
                }
                Err(e) => {
                    run.note(format!(
                        "referenced {rtype} search failed ({e}); reading one by one"
                    ));
                    missing.extend(chunk.iter().cloned());
                }
            }
        }
        Ok((stored, missing))
    }

    /// Stores what a grouped read (an `_id=` search, a batch) brought; the ids of `asked` it
    /// did not bring go to `missing`, to be read one by one. Returns how many were stored.
    #[allow(clippy::too_many_arguments)]
    async fn store_grouped_reads(
        &self,
        run: &Run,
        rtype: &str,
        bundle: aqueduct_client::fhir::Bundle,
        src: &PageSource<'_>,
        asked: &[String],
        missing: &mut Vec<String>,
        found: &mut Found,
    ) -> Result<u64, SyncError> {
        let page = bundle_page(bundle, src, &mut HashSet::new());
        let got: HashSet<&str> = page
            .resources
            .iter()
            .filter(|r| r.resource_type == rtype)
            .map(|r| r.logical_id.as_str())
            .collect();
        missing.extend(
            asked
                .iter()
                .filter(|id| !got.contains(id.as_str()))
                .cloned(),
        );
        self.write_page(run, &page.resources, &Default::default())
            .await?;
        found.references.extend(page.found.references);
        found.attachments.extend(page.found.attachments);
        found.attachment_sizes.extend(page.found.attachment_sizes);
        Ok(page.resources.len() as u64)
    }

    /// Individual reads, a few at a time (the host limiter paces them), written in batches.
    async fn fetch_one_by_one(
        &self,
        run: &Run,
        rtype: &str,
        ids: &[String],
        owner: Option<&str>,
        expected: &HashMap<(String, String), u64>,
        found: &mut Found,
    ) -> Result<(u64, Vec<Failure>), SyncError> {
        let mut stored = 0u64;
        let mut failures = Vec::new();
        for chunk in ids.chunks(64) {
            let results: Vec<(String, Result<RawResource, FetchError>)> =
                stream::iter(chunk.iter().cloned())
                    .map(|id| async move {
                        let want = expected.get(&(rtype.to_string(), id.clone())).copied();
                        let r = self.read_checked(run, rtype, &id, owner, want).await;
                        (id, r)
                    })
                    .buffer_unordered(4)
                    .collect()
                    .await;
            let mut batch = Vec::with_capacity(results.len());
            for (id, r) in results {
                match r {
                    Ok(raw) => {
                        if rtype != "Binary" {
                            if let Ok(text) = std::str::from_utf8(&raw.bytes) {
                                crate::refs::collect(text, found);
                            }
                        }
                        batch.push(raw);
                    }
                    Err(e) if e.needs_reauthorization() => run.abort(e.to_string()),
                    Err(e) => {
                        run.note(format!("referenced {rtype}/{id} not fetched: {e}"));
                        failures.push(failure(&id, &e));
                    }
                }
            }
            stored += batch.len() as u64;
            self.write_page(run, &batch, &Default::default()).await?;
            if run.aborted() {
                break;
            }
        }
        Ok((stored, failures))
    }

    /// Reads referenced resources with batch Bundles of GETs, up to `BATCH_MAX` per request.
    /// Returns how many were stored and the ids the batches did not bring.
    async fn fetch_batched(
        &self,
        run: &Run,
        rtype: &str,
        ids: &[String],
        owner: Option<&str>,
        found: &mut Found,
    ) -> Result<(u64, Vec<String>), SyncError> {
        const BATCH_MAX: usize = 50;
        let mut stored = 0u64;
        let mut missing = Vec::new();
        for (i, chunk) in ids.chunks(BATCH_MAX).enumerate() {
            let entries: Vec<serde_json::Value> = chunk
                .iter()
                .map(|id| serde_json::json!({"request": {"method": "GET", "url": format!("{rtype}/{id}")}}))
                .collect();
            let body =
                serde_json::json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
            let url = self.client.url("", &[])?;
            let req = FhirRequest::new(url)
                .resource_type(rtype)
                .template(format!("POST batch of {rtype} reads"))
                .post_json(body.to_string());
            match run.client.get(req).await {
                Ok(resp) => {
                    let Ok(bundle) = resp.bundle() else {
                        run.note(format!(
                            "batch of {rtype} reads: the answer is not a Bundle; reading one by one"
                        ));
                        missing.extend(chunk.iter().cloned());
                        continue;
                    };
                    let src = PageSource {
                        url: resp.url.as_str(),
                        patient_id: owner,
                        expected_type: Some(rtype),
                        fetched_at: Utc::now(),
                        collect_refs: rtype != "Binary",
                    };
                    stored += self
                        .store_grouped_reads(run, rtype, bundle, &src, chunk, &mut missing, found)
                        .await?;
                }
                Err(e) if e.needs_reauthorization() => {
                    run.abort(e.to_string());
                    return Ok((stored, Vec::new()));
                }
                Err(e) if e.is_rejected_query() => {
                    // the profile promised batch, the server refuses it: read these and the
                    // rest one by one, and stop trying batches with this server (like every
                    // probe, this outlives the run)
                    lock(&self.probes).batch_rejected = true;
                    run.note(format!(
                        "the server rejected a batch Bundle ({e}); reading {rtype} one by one"
                    ));
                    missing.extend(ids[i * BATCH_MAX..].iter().cloned());
                    break;
                }
                Err(e) => {
                    run.note(format!(
                        "referenced {rtype} batch failed ({e}); reading one by one"
                    ));
                    missing.extend(chunk.iter().cloned());
                }
            }
        }
        Ok((stored, missing))
    }

    /// [`Self::read_one`], checking raw content against the size its Attachment declares:
    /// a body of another length was cut short and is read once more, then refused (never
    /// stored as if whole).
    async fn read_checked(
        &self,
        run: &Run,
        rtype: &str,
        id: &str,
        owner: Option<&str>,
        want: Option<u64>,
    ) -> Result<RawResource, FetchError> {
        let short = |r: &RawResource| {
            want.is_some_and(|n| {
                matches!(r.parse_status, ParseStatus::InvalidJson(_)) && n != r.bytes.len() as u64
            })
        };
        let first = self.read_one(run, rtype, id, owner).await?;
        if !short(&first) {
            return Ok(first);
        }
        let again = self.read_one(run, rtype, id, owner).await?;
        if short(&again) {
            return Err(size_mismatch(&again.source_url, again.bytes.len(), want));
        }
        Ok(again)
    }

    /// Reads one referenced resource. A body that is not FHIR JSON (a Binary served as its
    /// raw content) is kept as received, flagged.
    async fn read_one(
        &self,
        run: &Run,
        rtype: &str,
        id: &str,
        owner: Option<&str>,
    ) -> Result<RawResource, FetchError> {
        let url = self.client.url(&format!("{rtype}/{id}"), &[])?;
        let mut req = FhirRequest::new(url).resource_type(rtype);
        if rtype == "Binary" {
            req = req.expect(Expect::Any);
        }
        let resp = run.client.get(req).await?;
        let src = PageSource {
            url: resp.url.as_str(),
            patient_id: owner,
            expected_type: Some(rtype),
            fetched_at: Utc::now(),
            collect_refs: true,
        };
        Ok(match std::str::from_utf8(&resp.body) {
            Ok(text) if resp.resource_type.is_some() => {
                let mut r = raw_resource(text.to_string(), &src);
                if r.logical_id.starts_with(crate::page::SYNTHETIC_ID_PREFIX) {
                    r.logical_id = id.to_string();
                }
                r
            }
            _ => RawResource {
                resource_type: rtype.to_string(),
                logical_id: id.to_string(),
                version_id: None,
                last_updated: None,
                source_url: resp.url.to_string(),
                patient_id: owner.map(str::to_string),
                parse_status: ParseStatus::InvalidJson(format!(
                    "raw content ({})",
                    resp.content_type
                        .clone()
                        .unwrap_or_else(|| "no content type".into())
                )),
                fetched_at: Utc::now(),
                bytes: resp.body.to_vec(),
            },
        })
    }
}
