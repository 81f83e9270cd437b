//! Writes the committed FEBRL-shaped fixture from the synthetic generator:
//! `cargo run --example make_fixture -- tests/fixtures/synthetic_febrl.csv`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tests/fixtures/synthetic_febrl.csv".into());
    let data = aqueduct_match::synth::generate(2_000, 2020);
    std::fs::write(&path, aqueduct_match::synth::to_febrl_csv(&data))?;
    println!("wrote {} records to {path}", data.records.len());
    Ok(())
}
