//! `aqueduct bench match`: the patient matcher's accuracy and speed on the public FEBRL data
//! sets (extracted by `crates/aqueduct-match/scripts/fetch_febrl.sh`) or on a synthetic noisy
//! population. All the work is in `aqueduct-match::bench`; this file parses and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use aqueduct_match::Settings;
use aqueduct_match::bench::{Febrl, run_febrl_with, run_synthetic};
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dataset {
    All,
    #[value(name = "1")]
    One,
    #[value(name = "2")]
    Two,
    #[value(name = "3")]
    Three,
    #[value(name = "4")]
    Four,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Caps {
    /// Off for FEBRL (no sex, no twins; its generator replaces whole given names), on for the
    /// synthetic population.
    Auto,
    On,
    Off,
}

#[derive(Args)]
pub struct BenchMatchArgs {
    /// Folder with FEBRL's dataset1.csv ... dataset4b.csv (default: $CARGO_TARGET_DIR/febrl,
    /// else target/febrl).
    #[arg(long)]
    febrl: Option<PathBuf>,
    /// Which FEBRL data set.
    #[arg(long, value_enum, default_value_t = Dataset::All)]
    dataset: Dataset,
    /// Deduplicate a synthetic population of N records instead of FEBRL.
    #[arg(long)]
    synthetic: Option<usize>,
    /// Seed of the synthetic population.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The rules that keep twins, parent and child, and a different sex out of automatic
    /// linking.
    #[arg(long, value_enum, default_value_t = Caps::Auto)]
    caps: Caps,
    /// Write the scored pairs as CSV (with several data sets, one file each: NAME.febrlN.csv).
    #[arg(long)]
    pairs_out: Option<PathBuf>,
}

fn settings(caps: Caps, synthetic: bool) -> Settings {
    let mut s = Settings::default();
    if caps == Caps::Off || (caps == Caps::Auto && !synthetic) {
        s.caps.clear();
    }
    s
}

pub fn run(args: BenchMatchArgs) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.synthetic {
        let mut file = args
            .pairs_out
            .as_ref()
            .map(std::fs::File::create)
            .transpose()?;
        let r = run_synthetic(
            n,
            args.seed,
            Some(settings(args.caps, true)),
            n <= 100_000,
            file.as_mut().map(|f| f as &mut dyn std::io::Write),
        )?;
        println!("{r}");
        return Ok(ExitCode::SUCCESS);
    }
    let dir = args.febrl.clone().unwrap_or_else(|| {
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()))
            .join("febrl")
    });
    let sets = match args.dataset {
        Dataset::All => vec![Febrl::Four, Febrl::Three, Febrl::Two, Febrl::One],
        Dataset::One => vec![Febrl::One],
        Dataset::Two => vec![Febrl::Two],
        Dataset::Three => vec![Febrl::Three],
        Dataset::Four => vec![Febrl::Four],
    };
    let several = sets.len() > 1;
    for set in sets {
        let path = args.pairs_out.as_ref().map(|p| {
            if several {
                let n = match set {
                    Febrl::One => 1,
                    Febrl::Two => 2,
                    Febrl::Three => 3,
                    Febrl::Four => 4,
                };
                p.with_extension(format!("febrl{n}.csv"))
            } else {
                p.clone()
            }
        });
        let mut file = path.as_ref().map(std::fs::File::create).transpose()?;
        let r = run_febrl_with(
            &dir,
            set,
            settings(args.caps, false),
            file.as_mut().map(|f| f as &mut dyn std::io::Write),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{e} (fetch the data with crates/aqueduct-match/scripts/fetch_febrl.sh)"
            )
        })?;
        println!("{r}\n");
    }
    Ok(ExitCode::SUCCESS)
}
