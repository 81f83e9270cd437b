//! HL7 v2 fixtures: an ADT message in the shape real feeds send (MRN and SSN in PID-3, a
//! visit, a Z-segment), and a store to receive it.

use std::sync::Arc;

use aqueduct_core::Store;

/// An ADT^`event` with control id `control` for the patient with MRN `mrn` (assigning
/// authority HOSP).
pub fn adt(control: &str, event: &str, mrn: &str) -> String {
    let mut pv1 = vec![String::new(); 46];
    pv1[0] = "PV1".into();
    pv1[1] = "1".into();
    pv1[2] = "I".into();
    pv1[3] = "4W^401^A".into();
    pv1[7] = "1234^Smith^Jane".into();
    pv1[19] = format!("V{mrn}");
    pv1[44] = "20240102030000+0100".into();
    if event == "A03" {
        pv1[45] = "20240105120000+0100".into();
    }
    format!(
        "MSH|^~\\&|EPIC|HOSP|AQ|AQ|20240102030405+0100||ADT^{event}^ADT_A01|{control}|P|2.5.1\r\
EVN|{event}|20240102030405\r\
PID|1||{mrn}^^^HOSP^MR~999-88-7777^^^SSA^SS||Doe^John^Q||19800101|M|||1 Main St^^Springfield^IL^62701||555-1234\r\
{}\r\
ZPI|custom|data\r",
        pv1.join("|")
    )
}

/// A fresh SQLite store in a temporary directory (kept while the directory lives).
pub async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let s = aqueduct_store::open(path.to_str().unwrap()).await.unwrap();
    (dir, s)
}
