//! Several processes opening one fresh SQLite store at once (an `aqueduct run`, an
//! `aqueduct hl7 listen` and a `status` started together): every open succeeds and the
//! migrations run once.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

#[test]
fn a_fresh_store_opened_by_several_processes_at_once_is_migrated_once() {
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let p = path.clone();
                // each thread its own runtime and connections: as separate processes would
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let s = aqueduct_store::sqlite::SqliteStore::open(&p).await?;
                        aqueduct_store::Store::schema_version(&s).await
                    })
                })
            })
            .collect();
        for t in threads {
            let v = t.join().unwrap();
            assert_eq!(
                v.unwrap(),
                aqueduct_store::SCHEMA_VERSION,
                "round {round}: every open succeeds at the current schema"
            );
        }
    }
}
