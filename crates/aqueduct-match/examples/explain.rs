//! Prints the evidence of two records with a model trained on a synthetic population:
//! `cargo run --release --example explain`.
use aqueduct_match::{Address, Matcher, Record, Settings, Sex, synth};

fn record(id: &str, given: &str, street: &str, phone: &str) -> Record {
    Record {
        id: id.into(),
        source: id.split('/').next().unwrap_or("").into(),
        given: vec![given.into()],
        family: "Smith".into(),
        birth_date: Some("1970-05-05".into()),
        sex: Some(Sex::Male),
        address: Some(Address {
            lines: vec![street.into()],
            city: "Springfield".into(),
            state: "IL".into(),
            postal_code: "62704".into(),
        }),
        phone: Some(phone.into()),
        email: None,
        identifiers: vec![],
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut m = Matcher::new(Settings::default());
    for r in synth::generate(20_000, 1).records {
        m.insert(&r)?;
    }
    m.train();
    m.insert(&record(
        "ehr-a/17",
        "Robert",
        "12 Main Street Apt 4",
        "(217) 555-0101",
    ))?;
    m.insert(&record(
        "payer/m-88",
        "Bob",
        "12 Main St #4",
        "+1 217 555 0101",
    ))?;
    println!("{}", m.explain("ehr-a/17", "payer/m-88")?);
    Ok(())
}
