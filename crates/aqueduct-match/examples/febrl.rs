//! Runs the FEBRL benchmarks from a folder: `cargo run --release --example febrl -- DIR [1|2|3|4]`.
use std::path::PathBuf;

use aqueduct_match::Settings;
use aqueduct_match::bench::{Febrl, run_febrl_with};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/febrl".into()));
    let which: Vec<Febrl> = match args.next().as_deref() {
        Some("1") => vec![Febrl::One],
        Some("2") => vec![Febrl::Two],
        Some("3") => vec![Febrl::Three],
        Some("4") => vec![Febrl::Four],
        _ => vec![Febrl::Four, Febrl::Three, Febrl::Two, Febrl::One],
    };
    let out = args.next();
    for w in which {
        let mut file = match &out {
            Some(p) => Some(std::fs::File::create(p)?),
            None => None,
        };
        let mut settings = Settings::default();
        if std::env::var("NOCAPS").is_ok() {
            settings.caps.clear();
        }
        let r = run_febrl_with(
            &dir,
            w,
            settings,
            file.as_mut().map(|f| f as &mut dyn std::io::Write),
        )?;
        println!("{r}");
    }
    Ok(())
}
