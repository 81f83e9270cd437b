//! The people in the population. A person's identity comes from (seed, patient index) only,
//! so simulators with the same seed but different personalities hold the same people; each
//! personality then records them with its own ids, MRNs and realistic discrepancies.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::mix;

const GIVEN_F: &[&str] = &[
    "Elizabeth",
    "Margaret",
    "Katherine",
    "Jennifer",
    "Maria",
    "Susan",
    "Patricia",
    "Linda",
    "Deborah",
    "Olivia",
    "Amara",
    "Mei",
    "Fatima",
    "Rosa",
    "Hannah",
    "Grace",
];
const GIVEN_M: &[&str] = &[
    "William", "Robert", "James", "Michael", "Richard", "Joseph", "Thomas", "Daniel", "Carlos",
    "Wei", "Ahmed", "Samuel", "Anthony", "Edward", "Nicholas", "Kwame",
];
const FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Nguyen",
    "Okafor",
    "Schmidt",
    "O'Brien",
    "Kowalski",
    "Patel",
    "Kim",
    "Cohen",
    "Anderson",
    "Thompson",
    "White",
    "Harris",
    "Clark",
];
const STREETS: &[&str] = &[
    "Main St",
    "Oak Ave",
    "Maple Dr",
    "Cedar Ln",
    "Elm St",
    "Washington Blvd",
    "Lakeview Rd",
    "Park Pl",
    "Sunset Ave",
    "River Rd",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("Springfield", "IL", "627"),
    ("Madison", "WI", "537"),
    ("Columbus", "OH", "432"),
    ("Austin", "TX", "787"),
    ("Portland", "OR", "972"),
    ("Raleigh", "NC", "276"),
    ("Denver", "CO", "802"),
    ("Boston", "MA", "021"),
];

fn nickname(given: &str) -> Option<&'static str> {
    Some(match given {
        "William" => "Bill",
        "Robert" => "Bob",
        "James" => "Jim",
        "Michael" => "Mike",
        "Richard" => "Rick",
        "Joseph" => "Joe",
        "Thomas" => "Tom",
        "Daniel" => "Dan",
        "Elizabeth" => "Liz",
        "Margaret" => "Peggy",
        "Katherine" => "Kate",
        "Jennifer" => "Jen",
        "Patricia" => "Pat",
        "Deborah" => "Debbie",
        "Samuel" => "Sam",
        "Anthony" => "Tony",
        "Edward" => "Ed",
        "Nicholas" => "Nick",
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub line: String,
    pub city: String,
    pub state: String,
    pub postal_code: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub given: String,
    pub middle: Option<String>,
    pub family: String,
    pub gender: &'static str,
    pub birth_date: String,
    pub birth_year: i32,
    pub address: Address,
    pub phone: String,
    pub ssn_last4: String,
}

fn address(rng: &mut ChaCha8Rng) -> Address {
    let (city, state, zip3) = CITIES[rng.random_range(0..CITIES.len())];
    Address {
        line: format!(
            "{} {}",
            rng.random_range(1..9999),
            STREETS[rng.random_range(0..STREETS.len())]
        ),
        city: city.into(),
        state: state.into(),
        postal_code: format!("{zip3}{:02}", rng.random_range(0..100)),
    }
}

impl Person {
    /// The real person behind patient index `index`.
    pub fn identity(seed: u64, index: usize) -> Person {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[seed, index as u64, 0x9e15]));
        let female = rng.random_bool(0.52);
        let pool = if female { GIVEN_F } else { GIVEN_M };
        let given = pool[rng.random_range(0..pool.len())].to_string();
        let middle = rng
            .random_bool(0.6)
            .then(|| pool[rng.random_range(0..pool.len())].to_string());
        let family = FAMILY[rng.random_range(0..FAMILY.len())].to_string();
        let birth_year = rng.random_range(1935..2020);
        let birth_date = format!(
            "{birth_year}-{:02}-{:02}",
            rng.random_range(1..13),
            rng.random_range(1..29)
        );
        Person {
            given,
            middle,
            family,
            gender: if female { "female" } else { "male" },
            birth_date,
            birth_year,
            address: address(&mut rng),
            phone: format!(
                "555-{:03}-{:04}",
                rng.random_range(200..999),
                rng.random_range(0..10000)
            ),
            ssn_last4: format!("{:04}", rng.random_range(0..10000)),
        }
    }

    /// How this source recorded the person: some sources use a nickname, mistype the family
    /// name, or still hold an old address. Chosen by (personality, seed, index).
    pub fn as_recorded_by(&self, source: &str, seed: u64, index: usize) -> Person {
        let salt = source
            .bytes()
            .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[seed, index as u64, salt]));
        let mut p = self.clone();
        match rng.random_range(0..10) {
            0 | 1 => {
                if let Some(n) = nickname(&p.given) {
                    p.given = n.to_string();
                }
            }
            2 => {
                let mut chars: Vec<char> = p.family.chars().collect();
                if chars.len() > 3 {
                    let i = rng.random_range(1..chars.len() - 1);
                    chars.swap(i, i + 1);
                    p.family = chars.into_iter().collect();
                }
            }
            3 => p.address = address(&mut rng),
            4 => p.middle = None,
            _ => {}
        }
        p
    }
}
