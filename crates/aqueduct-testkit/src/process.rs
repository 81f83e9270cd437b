//! The simulator as a child process of the `aqueduct` binary, as a user runs it, killed when
//! dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `BIN sim --listen 127.0.0.1:0 <args>` (`BIN`: the `aqueduct` binary, which only the CLI
/// crate's tests can name); returns it and its FHIR base URL.
pub fn start_sim(bin: &str, args: &[&str]) -> (Killed, String) {
    let mut child = Command::new(bin)
        .args(["sim", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the aqueduct binary runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("simulator exited")
            .expect("simulator output");
        if let Some(i) = line.find("http://") {
            break line[i..]
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
        }
    };
    // Keep reading so the simulator never writes into a closed pipe.
    std::thread::spawn(move || for _ in lines {});
    (Killed(child), base)
}
