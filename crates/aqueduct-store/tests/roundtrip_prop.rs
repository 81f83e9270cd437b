//! Property: any bytes handed to the store as a raw resource come back byte-identical, whatever
//! they are (binary, invalid UTF-8, empty), on both backends.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

mod common;

use aqueduct_store::*;
use common::*;
use proptest::prelude::*;

fn check(
    t: &TestStore,
    rt: &tokio::runtime::Runtime,
    cases: Vec<(String, Vec<u8>)>,
) -> Result<(), TestCaseError> {
    rt.block_on(async {
        let c = conn("prop", "src");
        let batch: Vec<_> = cases
            .iter()
            .map(|(id, bytes)| {
                let mut r = resource("Binary", id, "");
                r.bytes = bytes.clone();
                r.parse_status = ParseStatus::InvalidJson("arbitrary bytes".into());
                r
            })
            .collect();
        t.store.write_resources(&c, &batch).await.unwrap();
        // Later copies of a duplicated id win, as the store documents.
        let mut last = std::collections::HashMap::new();
        for (id, bytes) in &cases {
            last.insert(id.clone(), bytes.clone());
        }
        for (id, bytes) in last {
            let got = t
                .store
                .get_resource(&c, "Binary", &id)
                .await
                .unwrap()
                .unwrap();
            prop_assert_eq!(&got.bytes, &bytes);
            prop_assert_eq!(got.content_hash, content_hash(&bytes));
        }
        Ok(())
    })
}

fn ids_and_bytes() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec(
        (
            "[a-zA-Z0-9.-]{1,12}",
            prop::collection::vec(any::<u8>(), 0..3000),
        ),
        1..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    #[test]
    fn sqlite_bytes_round_trip(cases in ids_and_bytes()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let t = rt.block_on(TestStore::sqlite());
        check(&t, &rt, cases)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]
    #[test]
    fn postgres_bytes_round_trip(cases in ids_and_bytes()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let t = rt.block_on(TestStore::postgres());
        check(&t, &rt, cases)?;
    }
}
