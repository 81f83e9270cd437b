//! The `aqueduct` binary; everything it does is in the crate's library (`lib.rs`).

fn main() -> std::process::ExitCode {
    aqueduct_cli::main()
}
