//! Explains pairs of a synthetic population: `explain_synth N SEED a,b [a,b ...]`.
use aqueduct_match::{Matcher, Settings, synth};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().unwrap_or_else(|| "20000".into()).parse()?;
    let seed: u64 = args.next().unwrap_or_else(|| "1".into()).parse()?;
    let data = synth::generate(n, seed);
    let mut m = Matcher::new(Settings::default());
    for r in &data.records {
        m.insert(r)?;
    }
    let t = m.train();
    println!("{t:?}");
    for pair in args {
        let (a, b) = pair.split_once(',').unwrap_or((&pair, &pair));
        for r in data.records.iter().filter(|r| r.id == a || r.id == b) {
            println!("{r:?}");
        }
        println!("{}\n", m.explain(a, b)?);
    }
    Ok(())
}
