//! Fetching a patient's record: `Patient/$everything` where it works, else one search (or one
//! per category) per type; each search is followed page by page, written to the store and
//! checkpointed; a type read completely (and nothing else about it a gap) tombstones what it
//! no longer returned.

use std::collections::HashSet;
use std::sync::Mutex;

use aqueduct_client::FhirRequest;
use chrono::{DateTime, SecondsFormat, Utc};
use url::Url;

use crate::checkpoint::{Resume, search_key};
use crate::outcome::{self, OutcomeMeaning, Refusal};
use crate::page::{NextPage, PageSource, bundle_page, next_page};
use crate::plan::{TypePlan, plan_type};
use crate::report::{MissingReason, SyncError};
use crate::syncer::{PatientState, Run, SyncMode, Syncer, last_sync_key, lock};

/// How one search ended.
#[derive(Debug, Clone)]
pub(crate) enum SearchEnd {
    Complete,
    Partial(MissingReason, String),
    Rejected(String),
    Forbidden(String),
    Reauth,
}

/// What the searches of one type (or `$everything`) share while they are read.
#[derive(Default)]
pub(crate) struct TypeFetch {
    /// (type, id) received, to count duplicates and to reconcile.
    pub seen: HashSet<(String, String)>,
    /// The server's clock at the first page (the earliest over the searches).
    pub server_time: Option<String>,
    /// Some search was continued from a checkpoint of an earlier process: `seen` is not the
    /// whole type, so nothing may be tombstoned and the last-sync time not advanced.
    pub resumed: bool,
}

/// One search to read.
pub(crate) struct SearchCursor<'a> {
    pub pid: &'a str,
    /// The type asked for; `None` for `$everything`.
    pub expected_type: Option<&'a str>,
    /// Its checkpoint key.
    pub key: String,
    pub first_url: Url,
}

impl SearchCursor<'_> {
    fn label(&self) -> &str {
        self.expected_type.unwrap_or("$everything")
    }
}

impl Syncer {
    /// `Patient/$everything` when the profile says the server has it. Returns false when the
    /// per-type searches must be used instead.
    pub(crate) async fn try_everything(
        &self,
        run: &Run,
        pid: &str,
        types: &[String],
        state: &Mutex<PatientState>,
    ) -> Result<bool, SyncError> {
        if !self.options.use_everything {
            return Ok(false);
        }
        // Where the profile does not promise `$everything`, it is probed on the first patient
        // (one cheap call; payers that offer it are many more than profiles say) and used from
        // then on if it works.
        let probing = match lock(&self.probes).everything_works {
            Some(false) => return Ok(false),
            Some(true) => false,
            None => !self.profile.capabilities.everything,
        };
        let count = self.profile.paging.max_page_size.to_string();
        // The server time of the last complete sync; its absence also means there is no
        // earlier complete fetch to reconcile against.
        let last_complete = self
            .store
            .load_checkpoint(&self.conn, &last_sync_key(pid, "$everything"))
            .await?;
        let since = match run.mode {
            SyncMode::Incremental => last_complete.clone(),
            SyncMode::Full => None,
        };
        let mut params: Vec<(&str, &str)> = vec![("_count", &count)];
        if let Some(s) = &since {
            params.push(("_since", s));
        }
        let cursor = SearchCursor {
            pid,
            expected_type: None,
            key: search_key(run.mode, pid, "$everything", "-"),
            first_url: self
                .client
                .url(&format!("Patient/{pid}/$everything"), &params)?,
        };
        let mut tf = TypeFetch::default();
        let end = self.run_search(run, &cursor, &mut tf, state).await?;
        match end {
            SearchEnd::Rejected(detail) => {
                run.note(format!(
                    "$everything rejected, using per-type searches: {detail}"
                ));
                lock(&self.probes).everything_works = Some(false);
                Ok(false)
            }
            SearchEnd::Forbidden(detail) => {
                run.note(format!(
                    "$everything forbidden, using per-type searches: {detail}"
                ));
                if probing {
                    lock(&self.probes).everything_works = Some(false);
                }
                Ok(false)
            }
            SearchEnd::Partial(reason, detail) if probing => {
                // a probe that did not come back whole is no reason to trust the operation
                run.note(format!(
                    "$everything probe incomplete ({}: {detail}), using per-type searches",
                    reason.as_str()
                ));
                lock(&self.probes).everything_works = Some(false);
                Ok(false)
            }
            SearchEnd::Reauth => Ok(true),
            SearchEnd::Partial(reason, detail) => {
                lock(&self.probes).everything_works = Some(true);
                run.partial(pid, "$everything", reason, detail);
                Ok(true)
            }
            SearchEnd::Complete => {
                if probing {
                    run.note(
                        "$everything works although the profile does not say so: used for the \
                         whole record"
                            .into(),
                    );
                }
                lock(&self.probes).everything_works = Some(true);
                let cap = self.profile.capabilities.everything_max_resources;
                if cap > 0 && tf.seen.len() as u64 >= cap {
                    run.partial(
                        pid,
                        "$everything",
                        MissingReason::Incomplete,
                        format!(
                            "$everything returned {} resources, the server's cap",
                            tf.seen.len()
                        ),
                    );
                    return Ok(true);
                }
                let mut all_types: HashSet<String> = types.iter().cloned().collect();
                all_types.extend(tf.seen.iter().map(|(t, _)| t.clone()));
                if run.mode == SyncMode::Full
                    && last_complete.is_some()
                    && outcome::may_tombstone(true, tf.resumed, false)
                {
                    lock(state).reconcile.extend(all_types);
                }
                // A resumed fetch started earlier than this run: its start time is unknown,
                // so the last-sync time is not advanced (the next incremental asks for more).
                if let Some(t) = tf.server_time.filter(|_| !tf.resumed) {
                    self.store
                        .save_checkpoint(&self.conn, &last_sync_key(pid, "$everything"), &t)
                        .await?;
                }
                Ok(true)
            }
        }
    }

    /// The patient itself when searching for it failed: `GET Patient/{id}`. True when it was
    /// read and stored (the search's failure is then only noted).
    async fn read_patient_instead(
        &self,
        run: &Run,
        pid: &str,
        state: &Mutex<PatientState>,
    ) -> Result<bool, SyncError> {
        let url = self.client.url(&format!("Patient/{pid}"), &[])?;
        let req = FhirRequest::new(url).resource_type("Patient").patient(pid);
        let resp = match run.client.get(req).await {
            Ok(r) if r.resource_type.as_deref() == Some("Patient") => r,
            Ok(_) => return Ok(false),
            Err(e) => {
                if e.needs_reauthorization() {
                    run.abort(e.to_string());
                }
                return Ok(false);
            }
        };
        let Ok(text) = std::str::from_utf8(&resp.body) else {
            return Ok(false);
        };
        let src = PageSource {
            url: resp.url.as_str(),
            patient_id: Some(pid),
            expected_type: Some("Patient"),
            fetched_at: Utc::now(),
            collect_refs: self.options.reference_depth > 0,
        };
        let raw = crate::page::raw_resource(text.to_string(), &src);
        let mut found = crate::refs::Found::default();
        crate::refs::collect(text, &mut found);
        {
            let mut st = lock(state);
            st.got_patient = true;
            st.patient_ids.insert(raw.logical_id.clone());
            st.links.extend(patient_links(&raw.bytes));
            st.fetched
                .insert((raw.resource_type.clone(), raw.logical_id.clone()));
            st.absorb(found);
        }
        run.note(format!(
            "Patient: the search for patient {pid} failed; read Patient/{pid} instead"
        ));
        self.write_page(run, std::slice::from_ref(&raw), &Default::default())
            .await?;
        Ok(true)
    }

    /// Whether the server holds any resource of `rtype` at all, by one server-wide
    /// `_summary=count` per type and run (cached); `true` when it cannot tell.
    pub(crate) async fn server_has_any(&self, run: &Run, rtype: &str) -> bool {
        if let Some(known) = lock(&self.probes).type_has_data.get(rtype) {
            return *known;
        }
        if run.stalled() {
            return true; // not asked: its searches will say the server stopped answering
        }
        let has = match self.client.url(rtype, &[("_summary", "count")]) {
            Ok(url) => match run
                .client
                .get(
                    FhirRequest::new(url)
                        .resource_type(rtype)
                        .template(format!("{rtype}?_summary=count")),
                )
                .await
            {
                Ok(resp) => resp
                    .bundle()
                    .ok()
                    .and_then(|b| b.total)
                    .is_none_or(|t| t > 0),
                Err(e) => {
                    if e.kind == aqueduct_client::FetchErrorKind::Timeout {
                        run.timed_out
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    true
                }
            },
            Err(_) => true,
        };
        lock(&self.probes)
            .type_has_data
            .insert(rtype.to_string(), has);
        has
    }

    pub(crate) async fn sync_type(
        &self,
        run: &Run,
        pid: &str,
        rtype: &str,
        state: &Mutex<PatientState>,
    ) -> Result<(), SyncError> {
        if let Some(granted) = self.client.granted_scopes() {
            if !crate::scopes::scopes_cover(&granted, rtype) {
                run.partial(
                    pid,
                    rtype,
                    MissingReason::ScopeNotGranted,
                    format!(
                        "the granted scopes do not include {rtype}: {}",
                        granted.join(" ")
                    ),
                );
                return Ok(());
            }
        }
        // The server time of the last complete sync; its absence also means there is no
        // earlier complete fetch to reconcile against.
        let last_complete = self
            .store
            .load_checkpoint(&self.conn, &last_sync_key(pid, rtype))
            .await?;
        let since = match run.mode {
            SyncMode::Incremental => last_complete.clone(),
            SyncMode::Full => None,
        };
        let plan: TypePlan = plan_type(&self.profile, rtype, pid, since.as_deref());
        // Start at the first alternative of a kind known to work, if any (kinds, not
        // positions: incremental plans put their `_lastUpdated` variants first; a rejected
        // variant is skipped by its remembered signature).
        let start_alt = {
            let probes = lock(&self.probes);
            plan.alternatives
                .iter()
                .position(|a| {
                    probes
                        .working_alternative
                        .contains(&(rtype.to_string(), a.kind.clone()))
                })
                .unwrap_or(0)
        };
        let mut tf = TypeFetch::default();
        let mut last_rejection = String::from("no search accepted");
        let mut forbidden: Option<String> = None;
        for alt in plan.alternatives.iter().skip(start_alt) {
            let mut accepted = 0usize;
            let mut worst: Option<(MissingReason, String)> = None;
            for s in &alt.searches {
                if lock(&self.probes)
                    .rejected
                    .contains(&(rtype.to_string(), s.signature.clone()))
                {
                    continue;
                }
                let params: Vec<(&str, &str)> = s
                    .params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let cursor = SearchCursor {
                    pid,
                    expected_type: Some(rtype),
                    key: search_key(run.mode, pid, rtype, &s.signature),
                    first_url: self.client.url(rtype, &params)?,
                };
                match self.run_search(run, &cursor, &mut tf, state).await? {
                    SearchEnd::Complete => accepted += 1,
                    SearchEnd::Partial(r, d) => {
                        accepted += 1;
                        worst.get_or_insert((r, d));
                    }
                    SearchEnd::Rejected(d) => {
                        lock(&self.probes)
                            .rejected
                            .insert((rtype.to_string(), s.signature.clone()));
                        if alt.searches.len() > 1 {
                            run.note(format!("{rtype}: search {} rejected: {d}", s.signature));
                        }
                        last_rejection = d;
                    }
                    SearchEnd::Forbidden(d) => {
                        forbidden = Some(d);
                        break;
                    }
                    SearchEnd::Reauth => return Ok(()),
                }
            }
            if let Some(d) = forbidden.take() {
                if lock(&run.unconfigured).contains(rtype) {
                    // later patients do not ask again
                    lock(&self.probes)
                        .type_has_data
                        .insert(rtype.to_string(), false);
                    if lock(&run.skipped).insert(rtype.to_string()) {
                        run.note(format!(
                            "{rtype}: listed by the server, not configured, and this client is \
                             not authorized for it ({d}); configure it and its scope to include it"
                        ));
                    }
                } else {
                    run.partial(pid, rtype, MissingReason::Forbidden, d);
                }
                return Ok(());
            }
            if accepted == 0 {
                continue;
            }
            lock(&self.probes)
                .working_alternative
                .insert((rtype.to_string(), alt.kind.clone()));
            if let Some((r, d)) = worst {
                if !(rtype == "Patient" && self.read_patient_instead(run, pid, state).await?) {
                    run.partial(pid, rtype, r, d);
                }
                return Ok(());
            }
            // Complete.
            if run.mode == SyncMode::Full
                && last_complete.is_some()
                && outcome::may_tombstone(true, tf.resumed, false)
            {
                lock(state).reconcile.push(rtype.to_string());
            }
            if let Some(t) = tf.server_time.as_ref().filter(|_| !tf.resumed) {
                self.store
                    .save_checkpoint(&self.conn, &last_sync_key(pid, rtype), t)
                    .await?;
            }
            return Ok(());
        }
        // a server that will not search its Patients may still read one
        if rtype == "Patient" && self.read_patient_instead(run, pid, state).await? {
            return Ok(());
        }
        let listed = self
            .capability()
            .await
            .is_some_and(|cs| cs.supports_type(rtype));
        match outcome::refused_type(listed, run.stored_types.contains(rtype)) {
            Refusal::NotOffered => {
                lock(&run.skipped).insert(rtype.to_string());
                run.note(format!(
                    "{rtype}: not offered (not in the CapabilityStatement, never returned, and refused: {last_rejection})"
                ));
            }
            Refusal::Gap(reason) => run.partial(pid, rtype, reason, last_rejection),
        }
        Ok(())
    }

    /// Full mode, after the record's references are resolved: stored resources of the
    /// patient and type that neither the complete fetch nor a reference brought in this run
    /// are tombstoned. A fetch that returned nothing while resources are stored is suspicious
    /// (an empty 200): nothing is tombstoned and the type is reported incomplete.
    pub(crate) async fn reconcile(
        &self,
        run: &Run,
        pid: &str,
        rtype: &str,
        seen: &HashSet<(String, String)>,
    ) -> Result<(), SyncError> {
        let stored = self
            .store
            .patient_resource_ids(&self.conn, pid, rtype)
            .await?;
        if stored.is_empty() {
            return Ok(());
        }
        let seen_of_type = seen.iter().filter(|(t, _)| t == rtype).count();
        if seen_of_type == 0 {
            run.partial(
                pid,
                rtype,
                MissingReason::Incomplete,
                format!(
                    "the server returned no {rtype} although {} are stored; nothing tombstoned",
                    stored.len()
                ),
            );
            return Ok(());
        }
        let gone: Vec<String> = stored
            .into_iter()
            .filter(|id| !seen.contains(&(rtype.to_string(), id.clone())))
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        let n = self
            .store
            .tombstone(&self.conn, rtype, &gone, Utc::now())
            .await?;
        run.count(rtype, |c| c.tombstoned += n);
        Ok(())
    }

    /// Follows one search page by page: each page is written, then what it referenced is
    /// saved, then the ledger, then the checkpoint — so a crash loses nothing a resumed run
    /// would not fetch again.
    pub(crate) async fn run_search(
        &self,
        run: &Run,
        cursor: &SearchCursor<'_>,
        tf: &mut TypeFetch,
        state: &Mutex<PatientState>,
    ) -> Result<SearchEnd, SyncError> {
        let (pid, expected_type, key) = (cursor.pid, cursor.expected_type, cursor.key.as_str());
        let rlabel = cursor.label();
        let cps = self.checkpoints(run);
        let mut url = cursor.first_url.clone();
        let mut from_checkpoint = false;
        match cps.search(key).await? {
            Resume::Fresh => {}
            Resume::Done(gap) => {
                tf.resumed = true;
                let found = cps.refs(key).await?;
                lock(state).absorb(found);
                return Ok(match gap {
                    Some((r, d)) => SearchEnd::Partial(r, d),
                    None => SearchEnd::Complete,
                });
            }
            Resume::Next(next) => {
                if let Ok(u) = Url::parse(&next)
                    && self.client.is_same_server(&u)
                {
                    tf.resumed = true;
                    from_checkpoint = true;
                    url = u;
                    let found = cps.refs(key).await?;
                    lock(state).absorb(found);
                }
            }
        }
        let paging = &self.profile.paging;
        let mut visited: HashSet<String> = HashSet::new();
        let mut page_no = 0u32;
        let mut fruitless = 0u32;
        // A gap a page carried while the search went on (suppressed data, an error outcome,
        // malformed entries): the search ends partial, whatever else it reads.
        let mut carried: Option<(MissingReason, String)> = None;
        loop {
            if run.aborted() {
                return Ok(SearchEnd::Reauth);
            }
            if run.stalled() {
                return Ok(SearchEnd::Partial(
                    MissingReason::FailedAfterRetries,
                    format!(
                        "{rlabel}: not asked — the server stopped answering (timeouts) earlier \
                         in this run"
                    ),
                ));
            }
            if run.past_deadline() {
                return Ok(SearchEnd::Partial(
                    MissingReason::DeadlineReached,
                    format!(
                        "{rlabel}: the run's deadline passed at page {}",
                        page_no + 1
                    ),
                ));
            }
            if page_no >= paging.max_pages.max(1) {
                return Ok(SearchEnd::Partial(
                    MissingReason::Incomplete,
                    format!(
                        "{rlabel}: stopped after {page_no} pages (paging.max_pages); the server \
                         kept sending next links ({url})"
                    ),
                ));
            }
            visited.insert(url.to_string());
            let mut req = FhirRequest::new(url.clone()).patient(pid);
            if let Some(t) = expected_type {
                req = req.resource_type(t);
            }
            let resp = match self.get_with_page_retries(run, req).await {
                Ok(r) => r,
                Err(e) if e.needs_reauthorization() => {
                    run.abort(e.to_string());
                    run.partial(
                        pid,
                        rlabel,
                        MissingReason::ReauthorizationNeeded,
                        e.to_string(),
                    );
                    return Ok(SearchEnd::Reauth);
                }
                Err(e) if from_checkpoint && e.is_rejected_query() => {
                    // A stale cursor: restart the search from its first page.
                    run.note(format!(
                        "{rlabel}: saved next link no longer valid, restarting: {e}"
                    ));
                    from_checkpoint = false;
                    tf.resumed = false;
                    tf.seen.retain(|(t, _)| Some(t.as_str()) != expected_type);
                    url = cursor.first_url.clone();
                    page_no = 0;
                    visited.clear();
                    continue;
                }
                Err(e) if e.has_outcome_code("suppressed") => {
                    return Ok(SearchEnd::Partial(
                        MissingReason::AuthorizationSuppressed,
                        format!("{rlabel}: the server withholds data this client may not see: {e}"),
                    ));
                }
                Err(e) if page_no == 0 && !from_checkpoint && e.is_forbidden() => {
                    return Ok(SearchEnd::Forbidden(e.to_string()));
                }
                Err(e) if page_no == 0 && !from_checkpoint && e.is_rejected_query() => {
                    return Ok(SearchEnd::Rejected(e.to_string()));
                }
                Err(e) => {
                    if e.kind == aqueduct_client::FetchErrorKind::Timeout {
                        run.timed_out
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let reason = match e.kind {
                        aqueduct_client::FetchErrorKind::RedirectRefused
                        | aqueduct_client::FetchErrorKind::TooLarge => {
                            MissingReason::RefusedResponse
                        }
                        _ if e.is_transient() => MissingReason::FailedAfterRetries,
                        _ => MissingReason::Incomplete,
                    };
                    return Ok(SearchEnd::Partial(
                        reason,
                        format!("page {}: {e}", page_no + 1),
                    ));
                }
            };
            let fetched_at = Utc::now();
            let bundle = match resp.bundle() {
                Ok(b) if b.is_bundle() => b,
                _ => {
                    return Ok(SearchEnd::Partial(
                        MissingReason::Incomplete,
                        format!(
                            "page {} of {rlabel} is not a Bundle ({})",
                            page_no + 1,
                            resp.url
                        ),
                    ));
                }
            };
            if page_no == 0 && !from_checkpoint {
                let t = bundle
                    .meta
                    .as_ref()
                    .and_then(|m| m.last_updated.as_deref())
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                    .map(|d| d.with_timezone(&Utc))
                    .or(resp.server_date);
                if let Some(t) = t {
                    let t = t.to_rfc3339_opts(SecondsFormat::Millis, true);
                    if tf.server_time.as_ref().is_none_or(|cur| t < *cur) {
                        tf.server_time = Some(t);
                    }
                }
            }
            let next = next_page(&resp.url, bundle.next_link(), &visited, |u| {
                self.client.is_same_server(u)
            });
            let total = bundle.total;
            let page_url = resp.url.to_string();
            let src = PageSource {
                url: &page_url,
                patient_id: Some(pid),
                expected_type,
                fetched_at,
                collect_refs: self.options.reference_depth > 0,
            };
            let page = bundle_page(bundle, &src, &mut tf.seen);
            drop(resp);
            if page_no == 0
                && page.resources.is_empty()
                && page.duplicates == 0
                && total.is_some_and(|t| t > 0)
            {
                return Ok(SearchEnd::Partial(
                    MissingReason::Incomplete,
                    format!(
                        "{rlabel}: an empty page although the server counts {} matches",
                        total.unwrap_or(0)
                    ),
                ));
            }
            for o in &page.outcomes {
                // the monitor reads these notes ("server outcome in results")
                run.note(format!(
                    "{rlabel}: server outcome in results: {}",
                    o.summary
                ));
                if let OutcomeMeaning::Gap(reason) = o.meaning {
                    carried.get_or_insert((
                        reason,
                        format!(
                            "{rlabel}: page {} carried the server's outcome \"{}\" ({page_url})",
                            page_no + 1,
                            o.summary
                        ),
                    ));
                }
            }
            if page.malformed > 0 {
                run.note(format!(
                    "{rlabel}: {} malformed entries skipped",
                    page.malformed
                ));
                carried.get_or_insert((
                    MissingReason::Incomplete,
                    format!(
                        "{rlabel}: page {} held {} entries that are not resources ({page_url})",
                        page_no + 1,
                        page.malformed
                    ),
                ));
            }
            fruitless = if page.resources.is_empty() {
                fruitless + 1
            } else {
                0
            };
            self.write_page(run, &page.resources, &page.duplicates_by_type)
                .await?;
            cps.save_refs(key, page_no, &page.found).await?;
            {
                let mut st = lock(state);
                for r in &page.resources {
                    if r.resource_type == "Patient" {
                        st.got_patient = true;
                        st.patient_ids.insert(r.logical_id.clone());
                        st.links.extend(patient_links(&r.bytes));
                    }
                    st.fetched
                        .insert((r.resource_type.clone(), r.logical_id.clone()));
                }
                st.absorb(page.found);
            }
            // the ledger is never behind the checkpoints: a crash loses at most the
            // requests of pages not yet checkpointed, which the resumed run repeats
            run.ledger
                .flush(self.store.as_ref(), &self.conn, run.id)
                .await?;
            page_no += 1;
            match next {
                NextPage::End => {
                    cps.save_done(key, carried.clone()).await?;
                    return Ok(match carried {
                        Some((r, d)) => SearchEnd::Partial(r, d),
                        None => SearchEnd::Complete,
                    });
                }
                NextPage::Problem(p) => {
                    return Ok(SearchEnd::Partial(
                        MissingReason::Incomplete,
                        format!("{rlabel}: {p}"),
                    ));
                }
                NextPage::Follow(_) if fruitless >= paging.max_fruitless_pages.max(1) => {
                    return Ok(SearchEnd::Partial(
                        MissingReason::Incomplete,
                        format!(
                            "{rlabel}: {fruitless} pages in a row added nothing new (empty, or \
                             only entries already seen) while the server kept sending next \
                             links; stopped at page {page_no} ({page_url})"
                        ),
                    ));
                }
                NextPage::Follow(n) => {
                    cps.save_next(key, n.as_str()).await?;
                    url = n;
                }
            }
        }
    }
}

/// The `Patient.link[].other` references of a Patient: the other records of the same person.
fn patient_links(bytes: &[u8]) -> Vec<String> {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Other {
        reference: Option<String>,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Link {
        other: Other,
    }
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Linked {
        link: Vec<Link>,
    }
    serde_json::from_slice::<Linked>(bytes)
        .map(|p| {
            p.link
                .into_iter()
                .filter_map(|l| l.other.reference)
                .collect()
        })
        .unwrap_or_default()
}
