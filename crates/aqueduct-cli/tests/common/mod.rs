//! A simulator started as a child process, as a user would run it, killed when dropped.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `aqueduct sim --listen 127.0.0.1:0 --patients 3 <args>`; returns it and its FHIR base URL.
pub fn start_sim(args: &[&str]) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aqueduct"))
        .args(["sim", "--listen", "127.0.0.1:0", "--patients", "3"])
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
