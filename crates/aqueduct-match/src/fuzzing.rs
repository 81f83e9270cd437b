//! Entry points for the fuzz targets (`fuzz/`): bytes in, no panic out.

use crate::compare::{Prepared, compare};
use crate::fhir;

/// A Patient from arbitrary bytes through the adapter, then prepared and compared with itself.
pub fn patient_adapter(data: &[u8]) {
    if let Ok(facts) = fhir::patient_from_slice("fuzz", data) {
        let p = Prepared::new(&facts.record);
        let _ = compare(&p, &p);
        for f in crate::compare::FIELDS {
            let _ = p.value(f);
        }
    }
}
