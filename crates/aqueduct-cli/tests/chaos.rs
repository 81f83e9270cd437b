//! The short chaos run of CI: a full sync killed with SIGKILL at random (seeded) points,
//! resumed each time; the store must equal an uninterrupted sync's, every outcome true.
//! `aqueduct bench chaos` runs the long version (200 patients, 50 kills).
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn a_sync_killed_again_and_again_ends_identical_to_an_uninterrupted_one() {
    for seed in ["7", "8"] {
        let out = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
            .args([
                "bench",
                "chaos",
                "--patients",
                "30",
                "--kills",
                "6",
                "--seed",
                seed,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "seed {seed}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("identical: yes"), "seed {seed}: {text}");
        assert!(text.contains("last complete"), "seed {seed}: {text}");
        assert!(
            text.contains("missing 0, extra 0, different bytes 0"),
            "seed {seed}: {text}"
        );
    }
}
