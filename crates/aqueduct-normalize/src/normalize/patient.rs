//! Patient: names (official first), birth date, gender, identifiers (NPIs checked), telecom
//! and addresses.

use super::Norm;
use crate::code_format;
use crate::fhir::{self, LStr};
use crate::model::*;
use crate::terminology::is_npi_system;

impl Norm<'_> {
    pub(super) fn patient(&mut self, p: fhir::Patient) -> NormalizedRow {
        self.many(&p.name, "name");
        self.many(&p.identifier, "identifier");
        self.many(&p.telecom, "telecom");
        self.many(&p.address, "address");
        let mut d = PatientDetail::default();
        for n in &p.name.items {
            let given: Vec<String> = n.given.items.iter().filter_map(LStr::owned).collect();
            d.names.push(NameOut {
                use_: n.use_.owned(),
                family: n.family.owned(),
                given,
                text: n.text.owned(),
            });
        }
        // official name first
        d.names.sort_by_key(|n| match n.use_.as_deref() {
            Some("official") => 0,
            Some("usual") | None => 1,
            _ => 2,
        });
        if d.names.is_empty() {
            self.flag("no-name", "name", "");
        }
        d.birth_date = self.when(&p.birthDate, "birthDate");
        if d.birth_date.as_ref().is_some_and(|w| w.utc.is_none()) {
            // flagged already as invalid-date
        }
        d.gender = match self.lstr(&p.gender, "gender") {
            None => None,
            Some(g) => {
                let l = g.to_ascii_lowercase();
                let n = match l.as_str() {
                    "male" | "female" | "other" | "unknown" => l.clone(),
                    "m" => "male".to_string(),
                    "f" => "female".to_string(),
                    "u" | "unk" => "unknown".to_string(),
                    _ => {
                        self.flag("unknown-gender-code", "gender", g);
                        "unknown".to_string()
                    }
                };
                if n != g {
                    self.flag("gender-normalized", "gender", g);
                }
                Some(n)
            }
        };
        d.deceased = p
            .deceasedBoolean
            .get()
            .copied()
            .or_else(|| p.deceasedDateTime.get().map(|_| true));
        for a in &p.address.items {
            d.addresses.push(AddressOut {
                use_: a.use_.owned(),
                lines: a.line.items.iter().filter_map(LStr::owned).collect(),
                city: a.city.owned(),
                state: a.state.owned(),
                postal_code: a.postalCode.owned(),
                country: a.country.owned(),
                text: a.text.owned(),
            });
        }
        for t in &p.telecom.items {
            match t.value.owned() {
                Some(v) => d.telecom.push(TelecomOut {
                    system: t.system.owned(),
                    value: v,
                    use_: t.use_.owned(),
                }),
                None => self.flag("empty-telecom", "telecom", ""),
            }
        }
        for i in &p.identifier.items {
            let Some(v) = i.value.owned() else {
                self.flag("empty-identifier", "identifier", "");
                continue;
            };
            let system = i.system.owned();
            match system.as_deref() {
                None => self.flag("identifier-without-system", "identifier", v.clone()),
                Some(s) if is_npi_system(s) => {
                    if let Err(why) = code_format::npi(v.trim()) {
                        self.flag("invalid-npi", "identifier", format!("{v}: {why}"));
                    }
                }
                Some(_) => {}
            }
            d.identifiers.push(IdentifierOut {
                system,
                value: v,
                type_code: i
                    .type_
                    .get()
                    .and_then(|cc| cc.coding.items.iter().find_map(|c| c.code.owned())),
            });
        }
        NormalizedRow {
            ordinal: 0,
            kind: Kind::Patient,
            patient_id: p.id.owned(),
            status: None,
            effective: None,
            code: None,
            detail: Detail::Patient(d),
            flags: self.take_flags(),
        }
    }
}
