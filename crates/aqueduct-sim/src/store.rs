//! The simulator's data: shared resources, lazily generated patient records, and the
//! id -> owner map that lets reads find a resource without scanning.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::generator::{self, Binary, GenContext, PatientRecord, Resource, generate_patient};

pub struct Store {
    pub ctx: GenContext,
    pub patient_ids: Vec<String>,
    pub group_id: String,
    patient_index: HashMap<String, usize>,
    shared: Vec<Resource>,
    shared_index: HashMap<String, usize>,
    records: RwLock<HashMap<usize, Arc<PatientRecord>>>,
    owners: RwLock<HashMap<String, usize>>,
    /// (step, wall-clock ms) of every evolve call, replayed on records generated later.
    steps: Mutex<Vec<(u64, i64)>>,
}

/// A resource found by type and id.
pub enum Found {
    Shared(Resource),
    InRecord(Arc<PatientRecord>, usize),
}

impl Found {
    pub fn resource(&self) -> &Resource {
        match self {
            Found::Shared(r) => r,
            Found::InRecord(rec, i) => &rec.resources[*i],
        }
    }
    pub fn patient_id(&self) -> Option<&str> {
        match self {
            Found::Shared(_) => None,
            Found::InRecord(rec, _) => Some(&rec.patient_id),
        }
    }
}

fn lock_err<T>(e: std::sync::PoisonError<T>) -> T {
    // A panic elsewhere must not take the whole simulator down; the data is still usable.
    e.into_inner()
}

impl Store {
    pub fn new(ctx: GenContext) -> Store {
        let patient_ids: Vec<String> = (0..ctx.total_patients())
            .map(|i| generator::patient_id(ctx.personality.id_style, ctx.seed, i))
            .collect();
        // Aliases and linked Patients find their record too.
        let patient_index = (0..patient_ids.len())
            .flat_map(|i| ctx.patient_keys(i).into_iter().map(move |k| (k, i)))
            .collect();
        let shared = generator::shared_resources(&ctx);
        let shared_index = shared
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("{}/{}", r.rtype, r.id), i))
            .collect();
        let group_id =
            generator::resource_id(ctx.personality.id_style, ctx.seed, "grp", usize::MAX, 1);
        Store {
            ctx,
            patient_ids,
            group_id,
            patient_index,
            shared,
            shared_index,
            records: RwLock::new(HashMap::new()),
            owners: RwLock::new(HashMap::new()),
            steps: Mutex::new(Vec::new()),
        }
    }

    pub fn patient_index(&self, patient_id: &str) -> Option<usize> {
        self.patient_index.get(patient_id).copied()
    }

    pub fn record(&self, index: usize) -> Arc<PatientRecord> {
        if let Some(r) = self.records.read().unwrap_or_else(lock_err).get(&index) {
            return r.clone();
        }
        // Serialize generation with evolve so a record never misses a step.
        let steps = self.steps.lock().unwrap_or_else(lock_err);
        if let Some(r) = self.records.read().unwrap_or_else(lock_err).get(&index) {
            return r.clone();
        }
        let rec = Arc::new(generate_patient(&self.ctx, index, &steps));
        self.register(&rec);
        self.records
            .write()
            .unwrap_or_else(lock_err)
            .insert(index, rec.clone());
        rec
    }

    pub fn record_of(&self, patient_id: &str) -> Option<Arc<PatientRecord>> {
        self.patient_index(patient_id).map(|i| self.record(i))
    }

    fn register(&self, rec: &PatientRecord) {
        let mut owners = self.owners.write().unwrap_or_else(lock_err);
        for r in &rec.resources {
            owners.insert(format!("{}/{}", r.rtype, r.id), rec.index);
        }
        for b in &rec.binaries {
            owners.insert(format!("Binary/{}", b.id), rec.index);
        }
    }

    pub fn shared(&self) -> &[Resource] {
        &self.shared
    }

    pub fn find(&self, rtype: &str, id: &str) -> Option<Found> {
        let key = format!("{rtype}/{id}");
        if self.ctx.is_shared(rtype) {
            return self
                .shared_index
                .get(&key)
                .map(|i| Found::Shared(self.shared[*i].clone()));
        }
        if rtype == "Patient" {
            let rec = self.record_of(id)?;
            // The population id and the alias both name the record's own Patient.
            let pos = rec
                .resources
                .iter()
                .position(|r| r.rtype == "Patient" && r.id == id)
                .unwrap_or(0);
            return Some(Found::InRecord(rec, pos));
        }
        let owner = self
            .owners
            .read()
            .unwrap_or_else(lock_err)
            .get(&key)
            .copied()?;
        let rec = self.record(owner);
        let pos = rec
            .resources
            .iter()
            .position(|r| r.rtype == rtype && r.id == id)?;
        Some(Found::InRecord(rec, pos))
    }

    /// A Binary and the id of the patient whose document it belongs to.
    pub fn binary(&self, id: &str) -> Option<(Binary, String)> {
        let owner = self
            .owners
            .read()
            .unwrap_or_else(lock_err)
            .get(&format!("Binary/{id}"))
            .copied()?;
        let rec = self.record(owner);
        let b = rec.binaries.iter().find(|b| b.id == id).cloned()?;
        Some((b, rec.patient_id.clone()))
    }

    pub fn evolve(&self, step: u64) {
        let mut steps = self.steps.lock().unwrap_or_else(lock_err);
        let wall = chrono::Utc::now().timestamp_millis();
        let now = steps
            .last()
            .map(|(_, ms)| (*ms + 1).max(wall))
            .unwrap_or(wall);
        steps.push((step, now));
        let cached: Vec<Arc<PatientRecord>> = self
            .records
            .read()
            .unwrap_or_else(lock_err)
            .values()
            .cloned()
            .collect();
        for rec in cached {
            let mut updated = (*rec).clone();
            generator::evolve_patient(&self.ctx, &mut updated, step, now);
            self.register(&updated);
            self.records
                .write()
                .unwrap_or_else(lock_err)
                .insert(updated.index, Arc::new(updated));
        }
    }
}
