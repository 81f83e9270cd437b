//! Deduplicates a synthetic population: `cargo run --release --example synthetic -- N [SEED]`.
use aqueduct_match::bench::run_synthetic;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().unwrap_or_else(|| "100000".into()).parse()?;
    let seed: u64 = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let mut out = match args.next() {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let r = run_synthetic(
        n,
        seed,
        None,
        n <= 100_000,
        out.as_mut().map(|f| f as &mut dyn std::io::Write),
    )?;
    println!("{r}");
    Ok(())
}
