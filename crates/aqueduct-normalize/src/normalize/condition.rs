//! Condition: the resolved code with its ICD-10-CM groups and chapter and SNOMED CT group
//! (the resolved code counts too, when mapped or inferred), clinical and verification status,
//! category, onset and abatement; an active condition that is abated is flagged.

use super::{Norm, concept_text, first_code, patient_ref};
use crate::fhir;
use crate::model::*;
use crate::terminology::{Domain, SNOMED, StdSystem, recognise_system};

impl Norm<'_> {
    pub(super) fn condition(&mut self, c: fhir::Condition) -> NormalizedRow {
        self.lax(&c.code, "code");
        self.lax(&c.subject, "subject");
        self.lax(&c.clinicalStatus, "clinicalStatus");
        self.lax(&c.verificationStatus, "verificationStatus");
        self.many(&c.category, "category");
        let code = self.resolve(c.code.get(), Domain::Condition, "code");
        let t = &*self.ctx.terminology;
        let mut groups: Vec<String> = Vec::new();
        let mut chapter: Option<ChapterOut> = None;
        let chapter_of = |k: &str, chapter: &mut Option<ChapterOut>| {
            if chapter.is_none() {
                *chapter = t.icd10_chapter(k).map(|g| ChapterOut {
                    number: g.group.clone(),
                    title: g.display.clone(),
                });
            }
        };
        let mut codings = Vec::new();
        if let Some(cc) = c.code.get() {
            for cd in &cc.coding.items {
                codings.push(CodingOut {
                    system: cd.system.owned(),
                    code: cd.code.owned(),
                    display: cd.display.owned(),
                });
                let (Some(s), Some(k)) = (cd.system.get(), cd.code.get()) else {
                    continue;
                };
                match recognise_system(s).map(|x| x.0) {
                    Some(StdSystem::Icd10Cm) if StdSystem::Icd10Cm.valid_code(k) => {
                        groups.extend(t.icd10_groups(k).into_iter().map(str::to_string));
                        chapter_of(k, &mut chapter);
                    }
                    Some(StdSystem::Snomed) if StdSystem::Snomed.valid_code(k) => {
                        groups.extend(t.snomed_group(k).map(str::to_string))
                    }
                    _ => {}
                }
            }
        }
        // the resolved code counts too (mapped or inferred)
        if let (Some(s), Some(k)) = (code.system.as_deref(), code.code.as_deref()) {
            if s == SNOMED {
                groups.extend(t.snomed_group(k).map(str::to_string));
            } else if recognise_system(s).map(|x| x.0) == Some(StdSystem::Icd10Cm) {
                groups.extend(t.icd10_groups(k).into_iter().map(str::to_string));
                chapter_of(k, &mut chapter);
            }
        }
        groups.sort();
        groups.dedup();
        let clinical_status = first_code(&c.clinicalStatus).map(|s| norm_clinical_status(&s));
        let verification_status = first_code(&c.verificationStatus);
        let category = c.category.items.iter().find_map(|cc| {
            cc.coding
                .items
                .iter()
                .find_map(|x| x.code.get())
                .or_else(|| concept_text(cc))
                .map(norm_condition_category)
        });
        let onset = if c.onsetDateTime.get().is_some() {
            self.when(&c.onsetDateTime, "onsetDateTime")
        } else if c.onsetPeriod.get().is_some() {
            self.period_start(&c.onsetPeriod, "onsetPeriod")
        } else if let Some(s) = c.onsetString.get() {
            self.flag("onset-as-text", "onsetString", s);
            None
        } else {
            None
        };
        let abatement = if c.abatementDateTime.get().is_some() {
            self.when(&c.abatementDateTime, "abatementDateTime")
        } else if c.abatementPeriod.get().is_some() {
            self.period_start(&c.abatementPeriod, "abatementPeriod")
        } else {
            None
        };
        let abated = c
            .abatementBoolean
            .get()
            .copied()
            .or((abatement.is_some() || c.abatementString.get().is_some()).then_some(true));
        if clinical_status.as_deref() == Some("active") && abated == Some(true) {
            self.flag("active-but-abated", "clinicalStatus", "");
        }
        if clinical_status.is_none() {
            self.flag("no-clinical-status", "clinicalStatus", "");
        }
        let recorded = self.when(&c.recordedDate, "recordedDate");
        let effective = onset.clone().or_else(|| recorded.clone());
        let status = clinical_status.clone();
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Condition,
            patient_id: patient_ref(&c.subject),
            status,
            effective,
            code: Some(code),
            detail: Detail::Condition(ConditionDetail {
                clinical_status,
                verification_status,
                category,
                onset,
                abatement,
                abated,
                recorded,
                groups,
                chapter,
                codings,
            }),
            flags: self.take_flags(),
        }
    }
}

fn norm_clinical_status(s: &str) -> String {
    match s {
        "active" | "recurrence" | "relapse" | "inactive" | "remission" | "resolved" => {
            s.to_string()
        }
        "a" => "active".into(),
        "i" => "inactive".into(),
        "r" => "resolved".into(),
        other => other.to_string(),
    }
}

fn norm_condition_category(s: &str) -> String {
    let l = s.to_ascii_lowercase();
    if l == "problem-list-item" || l.contains("problem") {
        "problem-list-item".into()
    } else if l == "encounter-diagnosis" || l.contains("diagnosis") || l.contains("encounter") {
        "encounter-diagnosis".into()
    } else if l == "health-concern" || l.contains("concern") {
        "health-concern".into()
    } else {
        "other".into()
    }
}
