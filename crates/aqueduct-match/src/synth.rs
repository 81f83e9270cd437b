//! A synthetic population with realistic noise and the ground truth of who is who: several
//! sources (two EHRs and a payer) hold records of overlapping people, with typos, nicknames,
//! moved addresses, new phone numbers, a different MRN at every source, twins (same birthday,
//! address and family name, different given names) and parents and children with the same name.
//! Deterministic for a seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bench::Labelled;
use crate::record::{Address, Identifier, Record, Sex};

const FEMALE: &[&str] = &[
    "mary",
    "patricia",
    "jennifer",
    "linda",
    "elizabeth",
    "barbara",
    "susan",
    "jessica",
    "sarah",
    "karen",
    "nancy",
    "lisa",
    "margaret",
    "betty",
    "sandra",
    "ashley",
    "dorothy",
    "kimberly",
    "emily",
    "donna",
    "michelle",
    "carol",
    "amanda",
    "melissa",
    "deborah",
    "stephanie",
    "rebecca",
    "laura",
    "sharon",
    "cynthia",
    "kathleen",
    "amy",
    "shirley",
    "angela",
    "helen",
    "anna",
    "brenda",
    "pamela",
    "nicole",
    "samantha",
    "katherine",
    "christine",
    "debra",
    "rachel",
    "catherine",
    "carolyn",
    "janet",
    "ruth",
    "maria",
    "heather",
    "diane",
    "virginia",
    "julie",
    "joyce",
    "victoria",
    "olivia",
    "kelly",
    "christina",
    "lauren",
    "joan",
    "evelyn",
    "judith",
    "megan",
    "cheryl",
    "andrea",
    "hannah",
    "martha",
    "jacqueline",
    "frances",
    "gloria",
    "ann",
    "teresa",
    "kathryn",
    "sara",
    "janice",
    "jean",
    "alice",
    "madison",
    "doris",
    "abigail",
    "julia",
    "judy",
    "grace",
    "denise",
    "amber",
    "marilyn",
    "beverly",
    "danielle",
    "theresa",
    "sophia",
    "marie",
    "diana",
    "brittany",
    "natalie",
    "isabella",
    "charlotte",
    "rose",
    "alexis",
    "kayla",
    "zoe",
    "aaliyah",
    "priya",
    "mei",
    "fatima",
    "ximena",
    "siobhan",
    "ingrid",
    "yuki",
    "amara",
    "leilani",
    "noor",
];
const MALE: &[&str] = &[
    "james",
    "robert",
    "john",
    "michael",
    "david",
    "william",
    "richard",
    "joseph",
    "thomas",
    "charles",
    "christopher",
    "daniel",
    "matthew",
    "anthony",
    "mark",
    "donald",
    "steven",
    "paul",
    "andrew",
    "joshua",
    "kenneth",
    "kevin",
    "brian",
    "george",
    "timothy",
    "ronald",
    "edward",
    "jason",
    "jeffrey",
    "ryan",
    "jacob",
    "gary",
    "nicholas",
    "eric",
    "jonathan",
    "stephen",
    "larry",
    "justin",
    "scott",
    "brandon",
    "benjamin",
    "samuel",
    "gregory",
    "alexander",
    "frank",
    "patrick",
    "raymond",
    "jack",
    "dennis",
    "jerry",
    "tyler",
    "aaron",
    "jose",
    "adam",
    "nathan",
    "henry",
    "douglas",
    "zachary",
    "peter",
    "kyle",
    "ethan",
    "walter",
    "noah",
    "jeremy",
    "christian",
    "keith",
    "roger",
    "terry",
    "gerald",
    "harold",
    "sean",
    "austin",
    "carl",
    "arthur",
    "lawrence",
    "dylan",
    "jesse",
    "jordan",
    "bryan",
    "billy",
    "joe",
    "bruce",
    "gabriel",
    "logan",
    "albert",
    "willie",
    "alan",
    "juan",
    "wayne",
    "elijah",
    "randy",
    "roy",
    "vincent",
    "ralph",
    "eugene",
    "russell",
    "bobby",
    "mason",
    "philip",
    "louis",
    "arjun",
    "wei",
    "omar",
    "mateo",
    "liam",
    "kofi",
    "hiroshi",
    "diego",
    "tariq",
    "lars",
];
const SURNAMES: &[&str] = &[
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
    "green",
    "adams",
    "nelson",
    "baker",
    "hall",
    "rivera",
    "campbell",
    "mitchell",
    "carter",
    "roberts",
    "gomez",
    "phillips",
    "evans",
    "turner",
    "diaz",
    "parker",
    "cruz",
    "edwards",
    "collins",
    "reyes",
    "stewart",
    "morris",
    "morales",
    "murphy",
    "cook",
    "rogers",
    "gutierrez",
    "ortiz",
    "morgan",
    "cooper",
    "peterson",
    "bailey",
    "reed",
    "kelly",
    "howard",
    "ramos",
    "kim",
    "cox",
    "ward",
    "richardson",
    "watson",
    "brooks",
    "chavez",
    "wood",
    "james",
    "bennett",
    "gray",
    "mendoza",
    "ruiz",
    "hughes",
    "price",
    "alvarez",
    "castillo",
    "sanders",
    "patel",
    "myers",
    "long",
    "ross",
    "foster",
    "jimenez",
    "obrien",
    "oconnor",
    "schmidt",
    "kowalski",
    "nakamura",
    "okafor",
    "haddad",
    "johansson",
    "rossi",
    "dubois",
    "fischer",
    "novak",
    "silva",
];
const SYLLABLES: &[&str] = &[
    "an", "ber", "cal", "dor", "el", "fen", "gar", "hal", "is", "jor", "kel", "lin", "mar", "nor",
    "ol", "pen", "quin", "ros", "sal", "tor", "ul", "van", "wes", "yor", "zan", "ford", "ton",
    "ley", "wick", "son", "berg", "man", "stein", "field", "worth", "by", "dale", "more", "ridge",
    "wood",
];
const STREET_TYPES: &[(&str, &str)] = &[
    ("Street", "St"),
    ("Avenue", "Ave"),
    ("Road", "Rd"),
    ("Drive", "Dr"),
    ("Lane", "Ln"),
    ("Court", "Ct"),
    ("Boulevard", "Blvd"),
    ("Place", "Pl"),
];
const CITIES: &[(&str, &str)] = &[
    ("Springfield", "IL"),
    ("Riverside", "CA"),
    ("Franklin", "TN"),
    ("Greenville", "SC"),
    ("Bristol", "CT"),
    ("Clinton", "IA"),
    ("Fairview", "OR"),
    ("Madison", "WI"),
    ("Georgetown", "TX"),
    ("Salem", "MA"),
    ("Arlington", "VA"),
    ("Dayton", "OH"),
    ("Auburn", "AL"),
    ("Dover", "DE"),
    ("Hudson", "NY"),
    ("Lexington", "KY"),
    ("Milford", "NH"),
    ("Newport", "RI"),
    ("Oxford", "MS"),
    ("Burlington", "VT"),
];
const SOURCES: &[&str] = &["ehr-north", "ehr-south", "payer"];

/// What a person is, before any source writes it down.
#[derive(Clone)]
struct Person {
    given: String,
    middle: String,
    family: String,
    sex: Sex,
    dob: (u32, u32, u32),
    address: (u32, String, usize, String, u32),
    phone: u64,
    email_user: String,
    ssn: Option<u64>,
}

fn pick<'a>(rng: &mut ChaCha8Rng, list: &[&'a str]) -> &'a str {
    // Zipf-like: early entries are common
    let n = list.len();
    let r: f64 = rng.random::<f64>();
    let i = (n as f64 * r.powf(1.6)) as usize;
    list[i.min(n - 1)]
}

fn made_up_name(rng: &mut ChaCha8Rng) -> String {
    let k = rng.random_range(2..=3);
    (0..k)
        .map(|_| SYLLABLES[rng.random_range(0..SYLLABLES.len())])
        .collect()
}

fn address(rng: &mut ChaCha8Rng) -> (u32, String, usize, String, u32) {
    let number = rng.random_range(1..9_999);
    let street = format!(
        "{} {}",
        capitalize(&made_up_name(rng)),
        STREET_TYPES[rng.random_range(0..STREET_TYPES.len())].0
    );
    let city = rng.random_range(0..CITIES.len());
    let zip = 10_000 + (city as u32) * 4_000 + rng.random_range(0..400);
    let unit = if rng.random_bool(0.2) {
        format!("{}", rng.random_range(1..40))
    } else {
        String::new()
    };
    (number, street, city, unit, zip)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn new_person(rng: &mut ChaCha8Rng) -> Person {
    let sex = if rng.random_bool(0.5) {
        Sex::Female
    } else {
        Sex::Male
    };
    let names = if sex == Sex::Female { FEMALE } else { MALE };
    let given = pick(rng, names).to_string();
    let middle = pick(rng, names).to_string();
    let mut family = if rng.random_bool(0.55) {
        pick(rng, SURNAMES).to_string()
    } else {
        made_up_name(rng)
    };
    if rng.random_bool(0.04) {
        family = format!("{family}-{}", pick(rng, SURNAMES));
    }
    let dob = (
        rng.random_range(1925..2024),
        rng.random_range(1..=12),
        rng.random_range(1..=28),
    );
    let email_user = format!("{given}.{family}{}", rng.random_range(1..99));
    Person {
        given,
        middle,
        family,
        sex,
        dob,
        address: address(rng),
        phone: rng.random_range(2_000_000_000u64..9_999_999_999),
        email_user,
        ssn: rng
            .random_bool(0.6)
            .then(|| rng.random_range(100_000_000u64..899_999_999)),
    }
}

fn typo(rng: &mut ChaCha8Rng, s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    if c.len() < 3 {
        return s.to_string();
    }
    let i = rng.random_range(1..c.len());
    match rng.random_range(0..4) {
        0 => {
            c.remove(i);
        }
        1 => c.insert(i, (b'a' + rng.random_range(0..26u8)) as char),
        2 => c[i] = (b'a' + rng.random_range(0..26u8)) as char,
        _ => c.swap(i - 1, i),
    }
    c.into_iter().collect()
}

fn nickname(given: &str) -> Option<&'static str> {
    const NICK: &[(&str, &str)] = &[
        ("robert", "bob"),
        ("elizabeth", "liz"),
        ("william", "bill"),
        ("richard", "dick"),
        ("james", "jim"),
        ("michael", "mike"),
        ("margaret", "peggy"),
        ("katherine", "kate"),
        ("thomas", "tom"),
        ("joseph", "joe"),
        ("jennifer", "jen"),
        ("patricia", "pat"),
        ("christopher", "chris"),
        ("daniel", "dan"),
        ("anthony", "tony"),
        ("susan", "sue"),
        ("deborah", "debbie"),
        ("edward", "ted"),
        ("rebecca", "becky"),
        ("alexander", "alex"),
        ("samantha", "sam"),
        ("nicholas", "nick"),
        ("matthew", "matt"),
        ("andrew", "andy"),
        ("steven", "steve"),
        ("jonathan", "jon"),
        ("benjamin", "ben"),
        ("timothy", "tim"),
    ];
    NICK.iter().find(|(f, _)| *f == given).map(|(_, n)| *n)
}

/// How one source writes a person down, with noise.
fn write_down(rng: &mut ChaCha8Rng, p: &Person, source: usize, id: String, first: bool) -> Record {
    let noisy = !first;
    let mut given = p.given.clone();
    if noisy && rng.random_bool(0.15) {
        if let Some(n) = nickname(&given) {
            given = n.to_string();
        }
    }
    if noisy && rng.random_bool(0.10) {
        given = typo(rng, &given);
    }
    let mut family = p.family.clone();
    if noisy && rng.random_bool(0.10) {
        family = typo(rng, &family);
    }
    if noisy && family.contains('-') && rng.random_bool(0.5) {
        family = family.split('-').next().unwrap_or(&family).to_string();
    }
    let mut names = vec![capitalize(&given)];
    if rng.random_bool(0.4) {
        names.push(capitalize(&p.middle));
    }
    let (mut y, mut m, mut d) = p.dob;
    if noisy && rng.random_bool(0.04) {
        match rng.random_range(0..3) {
            0 if d <= 12 => std::mem::swap(&mut m, &mut d),
            1 => y += 1,
            _ => d = if d >= 20 { d - 10 } else { d + 1 },
        }
    }
    let birth_date = Some(format!("{y:04}-{m:02}-{d:02}"));
    let (mut number, mut street, mut city, mut unit, mut zip) = p.address.clone();
    if noisy && rng.random_bool(0.15) {
        (number, street, city, unit, zip) = address(rng); // moved
    }
    let short = rng.random_bool(0.5);
    let street = if short {
        STREET_TYPES
            .iter()
            .fold(street, |s, (full, abbr)| s.replace(full, abbr))
    } else {
        street
    };
    let mut lines = vec![format!("{number} {street}")];
    if !unit.is_empty() {
        match rng.random_range(0..3) {
            0 => lines.push(format!("Apt {unit}")),
            1 => lines[0].push_str(&format!(" #{unit}")),
            _ => lines.push(format!("Unit {unit}")),
        }
    }
    let (city_name, state) = CITIES[city];
    let address = (!noisy || rng.random_bool(0.95)).then(|| Address {
        lines,
        city: city_name.to_string(),
        state: state.to_string(),
        postal_code: if rng.random_bool(0.3) {
            format!("{zip:05}-{:04}", rng.random_range(0..9999))
        } else {
            format!("{zip:05}")
        },
    });
    let mut phone = p.phone;
    if noisy && rng.random_bool(0.2) {
        phone = rng.random_range(2_000_000_000u64..9_999_999_999); // new number
    }
    let digits = format!("{phone:010}");
    let phone = (rng.random_bool(0.85)).then(|| match rng.random_range(0..3) {
        0 => format!("({}) {}-{}", &digits[0..3], &digits[3..6], &digits[6..]),
        1 => format!("+1 {} {} {}", &digits[0..3], &digits[3..6], &digits[6..]),
        _ => digits.clone(),
    });
    let email = rng.random_bool(0.4).then(|| {
        let e = format!("{}@example.org", p.email_user);
        if rng.random_bool(0.3) {
            e.to_uppercase()
        } else {
            e
        }
    });
    let mut identifiers = vec![Identifier {
        system: format!("urn:aqueduct:mrn:{}", SOURCES[source]),
        value: format!("{}", rng.random_range(1_000_000u64..99_999_999)),
    }];
    if let Some(ssn) = p.ssn {
        if rng.random_bool(0.5) {
            identifiers.push(Identifier {
                system: "http://hl7.org/fhir/sid/us-ssn".into(),
                value: format!("{ssn:09}"),
            });
        }
    }
    Record {
        id,
        source: SOURCES[source].to_string(),
        given: names,
        family: capitalize(&family),
        birth_date,
        sex: Some(p.sex),
        address,
        phone,
        email,
        identifiers,
    }
}

/// Generates about `records` records; calls `emit(record, person)` for each.
pub fn generate_each(records: usize, seed: u64, mut emit: impl FnMut(Record, u64)) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut made = 0usize;
    let mut person_no = 0u64;
    let mut previous: Option<Person> = None;
    while made < records {
        let mut p = new_person(&mut rng);
        if let Some(prev) = &previous {
            let roll: f64 = rng.random();
            if roll < 0.03 {
                // a twin: same family, birthday, address and phone; another given name
                let names = if p.sex == Sex::Female { FEMALE } else { MALE };
                let mut given = pick(&mut rng, names).to_string();
                while given == prev.given
                    || crate::compare::nickname_equivalent(&given, &prev.given)
                {
                    given = names[rng.random_range(0..names.len())].to_string();
                }
                p = Person {
                    given,
                    sex: p.sex,
                    middle: p.middle,
                    email_user: p.email_user,
                    ssn: p.ssn,
                    ..prev.clone()
                };
            } else if roll < 0.05 {
                // a parent's child with the same name at the same address, 20-40 years younger
                let (y, m, d) = prev.dob;
                p = Person {
                    dob: (y + rng.random_range(20..40), m % 12 + 1, d),
                    middle: p.middle,
                    email_user: p.email_user,
                    ssn: p.ssn,
                    ..prev.clone()
                };
            }
        }
        let copies = match rng.random::<f64>() {
            x if x < 0.45 => 1,
            x if x < 0.80 => 2,
            x if x < 0.95 => 3,
            _ => 4,
        };
        let first_source = rng.random_range(0..SOURCES.len());
        for k in 0..copies {
            if made >= records {
                break;
            }
            let source =
                (first_source + k + usize::from(k > 2 && rng.random_bool(0.5))) % SOURCES.len();
            let id = format!("syn-{person_no}-{k}");
            emit(write_down(&mut rng, &p, source, id, k == 0), person_no);
            made += 1;
        }
        previous = Some(p);
        person_no += 1;
    }
}

/// A population of about `records` records with the truth.
pub fn generate(records: usize, seed: u64) -> Labelled {
    let mut out = Labelled::default();
    generate_each(records, seed, |r, p| {
        out.records.push(r);
        out.entity.push(p);
    });
    out
}

/// The population in the FEBRL CSV layout (`rec-<person>-org`, `rec-<person>-dup-<k>`), for a
/// committed fixture shaped like the public benchmark.
pub fn to_febrl_csv(data: &Labelled) -> String {
    let mut out = String::from(
        "rec_id, given_name, surname, street_number, address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id\n",
    );
    let mut seen: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for (r, e) in data.records.iter().zip(&data.entity) {
        let k = seen.entry(*e).or_insert(0);
        let id = if *k == 0 {
            format!("rec-{e}-org")
        } else {
            format!("rec-{e}-dup-{}", *k - 1)
        };
        *k += 1;
        let clean = |s: &str| s.replace(',', " ").to_lowercase();
        let (number, street, line2, city, zip, state) = match &r.address {
            Some(a) => {
                let first = a.lines.first().cloned().unwrap_or_default();
                let (n, s) = first.split_once(' ').unwrap_or(("", first.as_str()));
                (
                    n.to_string(),
                    s.to_string(),
                    a.lines.get(1).cloned().unwrap_or_default(),
                    a.city.clone(),
                    a.postal_code.clone(),
                    a.state.clone(),
                )
            }
            None => Default::default(),
        };
        let dob = r.birth_date.clone().unwrap_or_default().replace('-', "");
        let ssn = r
            .identifiers
            .iter()
            .find(|i| i.system.ends_with("us-ssn"))
            .map(|i| i.value.clone())
            .unwrap_or_default();
        out.push_str(&format!(
            "{id}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}\n",
            clean(r.given.first().map_or("", |s| s)),
            clean(&r.family),
            clean(&number),
            clean(&street),
            clean(&line2),
            clean(&city),
            clean(&zip),
            clean(&state),
            dob,
            ssn
        ));
    }
    out
}
