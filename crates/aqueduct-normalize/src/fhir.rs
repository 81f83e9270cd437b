//! Borrowed, lenient serde views of the FHIR resources that are normalized.
//!
//! Nothing here fails on a wrong shape: strings and numbers accept each other, a malformed
//! object becomes `Lax { value: None, malformed: true }`, a single object where an array is
//! expected is accepted. The normalizer turns `malformed` into flags. Only invalid JSON, or a
//! root that is not an object, fails the parse.

#![allow(non_snake_case)]

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// A string field that tolerates numbers and booleans (kept as text) and objects/arrays
/// (marked invalid).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum LStr<'a> {
    #[default]
    Missing,
    Str(Cow<'a, str>),
    Invalid,
}

impl<'a> LStr<'a> {
    /// The non-empty trimmed text, if any.
    pub fn get(&self) -> Option<&str> {
        match self {
            LStr::Str(s) => {
                let t = s.trim();
                (!t.is_empty()).then_some(t)
            }
            _ => None,
        }
    }
    pub fn is_invalid(&self) -> bool {
        matches!(self, LStr::Invalid)
    }
    pub fn owned(&self) -> Option<String> {
        self.get().map(str::to_string)
    }
}

struct LStrVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for LStrVisitor<'a> {
    type Value = LStr<'a>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(LStr::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(LStr::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(LStr::Str(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(LStr::Str(Cow::Owned(v.to_string())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(LStr::Str(Cow::Owned(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(LStr::Str(Cow::Owned(v.to_string())))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(LStr::Str(Cow::Owned(v.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(LStr::Missing)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(LStr::Missing)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(LStr::Invalid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(LStr::Invalid)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for LStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LStrVisitor(PhantomData))
    }
}

/// A number field that tolerates numeric strings (flagged) and anything else (kept as text).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Num {
    #[default]
    Missing,
    Number(f64),
    /// "5.4" where 5.4 was expected.
    FromString(f64),
    /// Not a number: the text (or `<object>` / `<array>`).
    NotNumber(String),
}

impl Num {
    pub fn value(&self) -> Option<f64> {
        match self {
            Num::Number(v) | Num::FromString(v) => Some(*v),
            _ => None,
        }
    }
}

struct NumVisitor;

impl<'de> Visitor<'de> for NumVisitor {
    type Value = Num;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
        Ok(Num::Number(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
        Ok(Num::Number(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
        Ok(if v.is_finite() {
            Num::Number(v)
        } else {
            Num::NotNumber(v.to_string())
        })
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
        let t = v.trim();
        // only plain decimals: no "inf", "nan", hex or thousands separators
        let plain = !t.is_empty()
            && t.bytes().all(|b| {
                b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+' || b == b'e' || b == b'E'
            })
            && t.bytes().any(|b| b.is_ascii_digit());
        match t.parse::<f64>() {
            Ok(x) if plain && x.is_finite() => Ok(Num::FromString(x)),
            _ => Ok(Num::NotNumber(v.chars().take(64).collect())),
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Num, E> {
        Ok(Num::NotNumber(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
        Ok(Num::Missing)
    }
    fn visit_none<E: de::Error>(self) -> Result<Num, E> {
        Ok(Num::Missing)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Num::NotNumber("<array>".into()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Num::NotNumber("<object>".into()))
    }
}

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumVisitor)
    }
}

/// An object field whose wrong shape is recorded instead of failing the resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Lax<T> {
    pub value: Option<T>,
    pub malformed: bool,
}

impl<T> Default for Lax<T> {
    fn default() -> Self {
        Lax {
            value: None,
            malformed: false,
        }
    }
}

impl<T> Lax<T> {
    pub fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lax<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw: &'de RawValue = Deserialize::deserialize(d)?;
        let s = raw.get();
        if s == "null" {
            return Ok(Lax::default());
        }
        Ok(match serde_json::from_str::<T>(s) {
            Ok(v) => Lax {
                value: Some(v),
                malformed: false,
            },
            Err(_) => Lax {
                value: None,
                malformed: true,
            },
        })
    }
}

/// An array field: accepts a single object too; elements of the wrong shape are dropped and
/// recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Many<T> {
    pub items: Vec<T>,
    pub malformed: bool,
}

impl<T> Default for Many<T> {
    fn default() -> Self {
        Many {
            items: Vec::new(),
            malformed: false,
        }
    }
}

struct ManyVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ManyVisitor<T> {
    type Value = Many<T>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Many<T>, A::Error> {
        let mut out = Many::default();
        while let Some(e) = seq.next_element::<Lax<T>>()? {
            match e.value {
                Some(v) => out.items.push(v),
                None => out.malformed |= e.malformed,
            }
        }
        Ok(out)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Many<T>, A::Error> {
        // a single object where an array belongs: read it (our element types are lenient),
        // and record the shape error
        let v = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Many {
            items: vec![v],
            malformed: true,
        })
    }
    fn visit_unit<E: de::Error>(self) -> Result<Many<T>, E> {
        Ok(Many::default())
    }
    fn visit_none<E: de::Error>(self) -> Result<Many<T>, E> {
        Ok(Many::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Many<T>, E> {
        Ok(Many {
            items: Vec::new(),
            malformed: true,
        })
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Many<T>, E> {
        Ok(Many {
            items: Vec::new(),
            malformed: true,
        })
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Many<T>, E> {
        Ok(Many {
            items: Vec::new(),
            malformed: true,
        })
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Many<T>, E> {
        Ok(Many {
            items: Vec::new(),
            malformed: true,
        })
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Many<T>, E> {
        Ok(Many {
            items: Vec::new(),
            malformed: true,
        })
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Many<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ManyVisitor(PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Coding<'a> {
    #[serde(borrow)]
    pub system: LStr<'a>,
    #[serde(borrow)]
    pub code: LStr<'a>,
    #[serde(borrow)]
    pub display: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CodeableConcept<'a> {
    #[serde(borrow)]
    pub coding: Many<Coding<'a>>,
    #[serde(borrow)]
    pub text: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Reference<'a> {
    #[serde(borrow)]
    pub reference: LStr<'a>,
    #[serde(borrow)]
    pub display: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Quantity<'a> {
    pub value: Num,
    #[serde(borrow)]
    pub comparator: LStr<'a>,
    #[serde(borrow)]
    pub unit: LStr<'a>,
    #[serde(borrow)]
    pub system: LStr<'a>,
    #[serde(borrow)]
    pub code: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Period<'a> {
    #[serde(borrow)]
    pub start: LStr<'a>,
    #[serde(borrow)]
    pub end: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReferenceRange<'a> {
    #[serde(borrow)]
    pub low: Lax<Quantity<'a>>,
    #[serde(borrow)]
    pub high: Lax<Quantity<'a>>,
    #[serde(borrow)]
    pub text: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Component<'a> {
    #[serde(borrow)]
    pub code: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub valueQuantity: Lax<Quantity<'a>>,
    #[serde(borrow)]
    pub valueString: LStr<'a>,
    #[serde(borrow)]
    pub valueCodeableConcept: Lax<CodeableConcept<'a>>,
    pub valueInteger: Num,
    #[serde(borrow)]
    pub interpretation: Many<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub referenceRange: Many<ReferenceRange<'a>>,
    #[serde(borrow)]
    pub dataAbsentReason: Lax<CodeableConcept<'a>>,
}

/// Only `resourceType` and `id`, to check what was received.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Head<'a> {
    #[serde(borrow)]
    pub resourceType: LStr<'a>,
    #[serde(borrow)]
    pub id: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Observation<'a> {
    #[serde(borrow)]
    pub resourceType: LStr<'a>,
    #[serde(borrow)]
    pub id: LStr<'a>,
    #[serde(borrow)]
    pub status: LStr<'a>,
    #[serde(borrow)]
    pub category: Many<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub code: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub subject: Lax<Reference<'a>>,
    #[serde(borrow)]
    pub effectiveDateTime: LStr<'a>,
    #[serde(borrow)]
    pub effectiveInstant: LStr<'a>,
    #[serde(borrow)]
    pub effectivePeriod: Lax<Period<'a>>,
    #[serde(borrow)]
    pub issued: LStr<'a>,
    #[serde(borrow)]
    pub valueQuantity: Lax<Quantity<'a>>,
    #[serde(borrow)]
    pub valueString: LStr<'a>,
    #[serde(borrow)]
    pub valueCodeableConcept: Lax<CodeableConcept<'a>>,
    pub valueInteger: Num,
    pub valueBoolean: Lax<bool>,
    #[serde(borrow)]
    pub interpretation: Many<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub referenceRange: Many<ReferenceRange<'a>>,
    #[serde(borrow)]
    pub component: Many<Component<'a>>,
    #[serde(borrow)]
    pub dataAbsentReason: Lax<CodeableConcept<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HumanName<'a> {
    #[serde(borrow, rename = "use")]
    pub use_: LStr<'a>,
    #[serde(borrow)]
    pub text: LStr<'a>,
    #[serde(borrow)]
    pub family: LStr<'a>,
    #[serde(borrow)]
    pub given: Many<LStr<'a>>,
    #[serde(borrow)]
    pub prefix: Many<LStr<'a>>,
    #[serde(borrow)]
    pub suffix: Many<LStr<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Address<'a> {
    #[serde(borrow, rename = "use")]
    pub use_: LStr<'a>,
    #[serde(borrow)]
    pub text: LStr<'a>,
    #[serde(borrow)]
    pub line: Many<LStr<'a>>,
    #[serde(borrow)]
    pub city: LStr<'a>,
    #[serde(borrow)]
    pub state: LStr<'a>,
    #[serde(borrow)]
    pub postalCode: LStr<'a>,
    #[serde(borrow)]
    pub country: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContactPoint<'a> {
    #[serde(borrow)]
    pub system: LStr<'a>,
    #[serde(borrow)]
    pub value: LStr<'a>,
    #[serde(borrow, rename = "use")]
    pub use_: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Identifier<'a> {
    #[serde(borrow, rename = "use")]
    pub use_: LStr<'a>,
    #[serde(borrow, rename = "type")]
    pub type_: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub system: LStr<'a>,
    #[serde(borrow)]
    pub value: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Patient<'a> {
    #[serde(borrow)]
    pub resourceType: LStr<'a>,
    #[serde(borrow)]
    pub id: LStr<'a>,
    #[serde(borrow)]
    pub identifier: Many<Identifier<'a>>,
    #[serde(borrow)]
    pub name: Many<HumanName<'a>>,
    #[serde(borrow)]
    pub telecom: Many<ContactPoint<'a>>,
    #[serde(borrow)]
    pub gender: LStr<'a>,
    #[serde(borrow)]
    pub birthDate: LStr<'a>,
    pub deceasedBoolean: Lax<bool>,
    #[serde(borrow)]
    pub deceasedDateTime: LStr<'a>,
    #[serde(borrow)]
    pub address: Many<Address<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Condition<'a> {
    #[serde(borrow)]
    pub resourceType: LStr<'a>,
    #[serde(borrow)]
    pub id: LStr<'a>,
    #[serde(borrow)]
    pub clinicalStatus: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub verificationStatus: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub category: Many<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub code: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub subject: Lax<Reference<'a>>,
    #[serde(borrow)]
    pub onsetDateTime: LStr<'a>,
    #[serde(borrow)]
    pub onsetPeriod: Lax<Period<'a>>,
    #[serde(borrow)]
    pub onsetString: LStr<'a>,
    #[serde(borrow)]
    pub abatementDateTime: LStr<'a>,
    #[serde(borrow)]
    pub abatementPeriod: Lax<Period<'a>>,
    #[serde(borrow)]
    pub abatementString: LStr<'a>,
    pub abatementBoolean: Lax<bool>,
    #[serde(borrow)]
    pub recordedDate: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Dosage<'a> {
    #[serde(borrow)]
    pub text: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DispenseRequest<'a> {
    #[serde(borrow)]
    pub validityPeriod: Lax<Period<'a>>,
    pub numberOfRepeatsAllowed: Num,
}

/// A contained resource: only what a contained Medication needs.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Contained<'a> {
    #[serde(borrow)]
    pub resourceType: LStr<'a>,
    #[serde(borrow)]
    pub id: LStr<'a>,
    #[serde(borrow)]
    pub code: Lax<CodeableConcept<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MedicationRequest<'a> {
    #[serde(borrow)]
    pub resourceType: LStr<'a>,
    #[serde(borrow)]
    pub id: LStr<'a>,
    #[serde(borrow)]
    pub status: LStr<'a>,
    #[serde(borrow)]
    pub intent: LStr<'a>,
    #[serde(borrow)]
    pub medicationCodeableConcept: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub medicationReference: Lax<Reference<'a>>,
    #[serde(borrow)]
    pub contained: Many<Contained<'a>>,
    #[serde(borrow)]
    pub subject: Lax<Reference<'a>>,
    #[serde(borrow)]
    pub authoredOn: LStr<'a>,
    #[serde(borrow)]
    pub dateAsserted: LStr<'a>,
    #[serde(borrow)]
    pub effectiveDateTime: LStr<'a>,
    #[serde(borrow)]
    pub effectivePeriod: Lax<Period<'a>>,
    #[serde(borrow)]
    pub dosageInstruction: Many<Dosage<'a>>,
    #[serde(borrow)]
    pub dosage: Many<Dosage<'a>>,
    #[serde(borrow)]
    pub dispenseRequest: Lax<DispenseRequest<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Reaction<'a> {
    #[serde(borrow)]
    pub substance: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub manifestation: Many<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub severity: LStr<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AllergyIntolerance<'a> {
    #[serde(borrow)]
    pub resourceType: LStr<'a>,
    #[serde(borrow)]
    pub id: LStr<'a>,
    #[serde(borrow)]
    pub clinicalStatus: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub verificationStatus: Lax<CodeableConcept<'a>>,
    #[serde(borrow, rename = "type")]
    pub type_: LStr<'a>,
    #[serde(borrow)]
    pub category: Many<LStr<'a>>,
    #[serde(borrow)]
    pub criticality: LStr<'a>,
    #[serde(borrow)]
    pub code: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub patient: Lax<Reference<'a>>,
    #[serde(borrow)]
    pub onsetDateTime: LStr<'a>,
    #[serde(borrow)]
    pub recordedDate: LStr<'a>,
    #[serde(borrow)]
    pub reaction: Many<Reaction<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Immunization<'a> {
    #[serde(borrow)]
    pub resourceType: LStr<'a>,
    #[serde(borrow)]
    pub id: LStr<'a>,
    #[serde(borrow)]
    pub status: LStr<'a>,
    #[serde(borrow)]
    pub vaccineCode: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub patient: Lax<Reference<'a>>,
    #[serde(borrow)]
    pub occurrenceDateTime: LStr<'a>,
    #[serde(borrow)]
    pub occurrenceString: LStr<'a>,
    #[serde(borrow)]
    pub lotNumber: LStr<'a>,
    pub primarySource: Lax<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Procedure<'a> {
    #[serde(borrow)]
    pub resourceType: LStr<'a>,
    #[serde(borrow)]
    pub id: LStr<'a>,
    #[serde(borrow)]
    pub status: LStr<'a>,
    #[serde(borrow)]
    pub code: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub subject: Lax<Reference<'a>>,
    #[serde(borrow)]
    pub performedDateTime: LStr<'a>,
    #[serde(borrow)]
    pub performedPeriod: Lax<Period<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Encounter<'a> {
    #[serde(borrow)]
    pub resourceType: LStr<'a>,
    #[serde(borrow)]
    pub id: LStr<'a>,
    #[serde(borrow)]
    pub status: LStr<'a>,
    /// R4: a Coding; R5 and some vendors: an array of CodeableConcept. Kept raw.
    #[serde(borrow)]
    pub class: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    pub type_: Many<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub serviceType: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub subject: Lax<Reference<'a>>,
    #[serde(borrow)]
    pub period: Lax<Period<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Attachment<'a> {
    #[serde(borrow)]
    pub contentType: LStr<'a>,
    pub size: Num,
    #[serde(borrow)]
    pub url: LStr<'a>,
    #[serde(borrow)]
    pub title: LStr<'a>,
    /// presence only (may be large)
    #[serde(borrow)]
    pub data: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DiagnosticReport<'a> {
    #[serde(borrow)]
    pub resourceType: LStr<'a>,
    #[serde(borrow)]
    pub id: LStr<'a>,
    #[serde(borrow)]
    pub status: LStr<'a>,
    #[serde(borrow)]
    pub category: Many<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub code: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub subject: Lax<Reference<'a>>,
    #[serde(borrow)]
    pub effectiveDateTime: LStr<'a>,
    #[serde(borrow)]
    pub effectivePeriod: Lax<Period<'a>>,
    #[serde(borrow)]
    pub issued: LStr<'a>,
    #[serde(borrow)]
    pub result: Many<Reference<'a>>,
    #[serde(borrow)]
    pub conclusion: LStr<'a>,
    #[serde(borrow)]
    pub presentedForm: Many<Attachment<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DocContent<'a> {
    #[serde(borrow)]
    pub attachment: Lax<Attachment<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct DocumentReference<'a> {
    #[serde(borrow)]
    pub resourceType: LStr<'a>,
    #[serde(borrow)]
    pub id: LStr<'a>,
    #[serde(borrow)]
    pub status: LStr<'a>,
    #[serde(borrow, rename = "type")]
    pub type_: Lax<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub category: Many<CodeableConcept<'a>>,
    #[serde(borrow)]
    pub subject: Lax<Reference<'a>>,
    #[serde(borrow)]
    pub date: LStr<'a>,
    #[serde(borrow)]
    pub content: Many<DocContent<'a>>,
}

/// `resourceType` and `id` of a parsed resource.
pub trait HasHead {
    fn head(&self) -> (&LStr<'_>, &LStr<'_>);
}

macro_rules! has_head {
    ($($t:ident),*) => {$(
        impl HasHead for $t<'_> {
            fn head(&self) -> (&LStr<'_>, &LStr<'_>) {
                (&self.resourceType, &self.id)
            }
        }
    )*};
}

has_head!(
    Observation,
    Patient,
    Condition,
    MedicationRequest,
    AllergyIntolerance,
    Immunization,
    Procedure,
    Encounter,
    DiagnosticReport,
    DocumentReference
);
