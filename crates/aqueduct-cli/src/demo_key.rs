//! Where the demo keeps its vault key: beside its store, so `status` can read what the demo
//! stored without the simulator being built in.

pub fn demo_key_path(store_location: &str) -> std::path::PathBuf {
    let dir = if store_location.contains("://") {
        std::path::PathBuf::from(aqueduct_config::DEFAULT_STORE)
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    } else {
        std::path::Path::new(store_location)
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    };
    dir.join("demo-vault.key")
}
