//! Format checks for standard codes and identifiers, so a system label is trusted only when
//! the code under it could be a code of that system.
//!
//! Sources label local numbers with a standard system (a lab's "31337" sent as LOINC); a
//! check digit or a fixed pattern tells most of them apart. Each check is pure, allocation
//! free (but [`ndc_11`]), and never panics on any string. A failed check says why
//! ([`FormatError`]), which goes into the row's `code-mislabelled` flag.

use std::fmt;

/// Why a code does not have its system's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    Empty,
    /// A character the system never uses (LOINC, SNOMED CT, RxNorm, CVX, NDC and NPI are
    /// digits, plus the LOINC and NDC hyphens).
    NotDigits,
    /// More or fewer characters than the system's codes have.
    Length,
    /// LOINC: no `-` before the check digit.
    NoCheckDigit,
    /// The check digit does not match (LOINC mod-10, SNOMED CT Verhoeff, NPI Luhn).
    CheckDigit,
    /// SNOMED CT: a leading zero (identifiers are integers).
    LeadingZero,
    /// SNOMED CT: the partition identifier is not that of a concept (`00` or `10`): a
    /// description or relationship id, or an unknown partition.
    NotAConceptId,
    /// ICD-10-CM: not a letter, a digit, an alphanumeric, then up to four alphanumerics
    /// after an optional dot.
    Pattern,
    /// NDC: hyphenated segments other than 4-4-2, 5-3-2, 5-4-1 (10 digits) or 5-4-2.
    NdcSegments,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FormatError::Empty => "empty code",
            FormatError::NotDigits => "characters other than digits",
            FormatError::Length => "wrong length",
            FormatError::NoCheckDigit => "no check digit (expected NNNNN-C)",
            FormatError::CheckDigit => "wrong check digit",
            FormatError::LeadingZero => "leading zero",
            FormatError::NotAConceptId => "partition identifier is not a concept's (00 or 10)",
            FormatError::Pattern => "not an ICD-10-CM pattern (A00, A00.0 to A00.0000)",
            FormatError::NdcSegments => {
                "NDC segments must be 4-4-2, 5-3-2, 5-4-1 or 5-4-2, or 11 digits"
            }
        })
    }
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The Luhn sum of `digits` (ASCII digits only) as if a check digit followed them: the
/// rightmost given digit is doubled. `extra` is added first (the NPI's `80840` prefix).
fn luhn_check_digit(digits: &[u8], extra: u32) -> u32 {
    let mut sum = extra;
    for (i, b) in digits.iter().rev().enumerate() {
        let d = u32::from(b.wrapping_sub(b'0'));
        if i % 2 == 0 {
            let dd = d * 2;
            sum += dd / 10 + dd % 10;
        } else {
            sum += d;
        }
    }
    (10 - sum % 10) % 10
}

/// LOINC: 1 to 7 digits, a hyphen, and the mod-10 (Luhn) check digit of the digits before
/// the hyphen (`2345-7`, `718-7`).
pub fn loinc(code: &str) -> Result<(), FormatError> {
    if code.is_empty() {
        return Err(FormatError::Empty);
    }
    let Some((num, check)) = code.split_once('-') else {
        return Err(if all_digits(code) {
            FormatError::NoCheckDigit
        } else {
            FormatError::NotDigits
        });
    };
    if !all_digits(num) || !all_digits(check) {
        return Err(FormatError::NotDigits);
    }
    if num.len() > 7 || check.len() != 1 {
        return Err(FormatError::Length);
    }
    if u32::from(check.as_bytes()[0] - b'0') != luhn_check_digit(num.as_bytes(), 0) {
        return Err(FormatError::CheckDigit);
    }
    Ok(())
}

/// Whether a whole SNOMED CT identifier (check digit last) passes the Verhoeff check.
fn verhoeff_ok(digits: &[u8]) -> bool {
    const D: [[u8; 10]; 10] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
        [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
        [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
        [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
        [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
        [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
        [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
        [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
        [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
    ];
    const P: [[u8; 10]; 8] = [
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        [1, 5, 7, 6, 2, 8, 3, 0, 9, 4],
        [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
        [8, 9, 1, 6, 0, 4, 3, 5, 2, 7],
        [9, 4, 5, 3, 1, 2, 6, 8, 7, 0],
        [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
        [2, 7, 9, 3, 8, 0, 6, 4, 1, 5],
        [7, 0, 4, 6, 9, 1, 3, 2, 5, 8],
    ];
    let mut c = 0u8;
    for (i, &x) in digits.iter().rev().enumerate() {
        let d = usize::from(x.wrapping_sub(b'0')).min(9);
        c = D[usize::from(c)][usize::from(P[i % 8][d])];
    }
    c == 0
}

/// A SNOMED CT identifier of any component: 6 to 18 digits, no leading zero, a valid
/// Verhoeff check digit.
pub fn snomed_id(code: &str) -> Result<(), FormatError> {
    let b = code.as_bytes();
    if b.is_empty() {
        return Err(FormatError::Empty);
    }
    if !all_digits(code) {
        return Err(FormatError::NotDigits);
    }
    if !(6..=18).contains(&b.len()) {
        return Err(FormatError::Length);
    }
    if b[0] == b'0' {
        return Err(FormatError::LeadingZero);
    }
    if !verhoeff_ok(b) {
        return Err(FormatError::CheckDigit);
    }
    Ok(())
}

/// A SNOMED CT concept id, what a coding's code must be: a valid identifier ([`snomed_id`])
/// whose partition identifier (the two digits before the check digit) is `00` (an
/// international concept) or `10` (a concept in an extension, after a 7-digit namespace).
pub fn snomed_concept(code: &str) -> Result<(), FormatError> {
    snomed_id(code)?;
    let b = code.as_bytes();
    match &b[b.len() - 3..b.len() - 1] {
        b"00" => Ok(()),
        // item id (at least one digit) + 7-digit namespace + partition + check digit
        b"10" if b.len() >= 11 => Ok(()),
        b"10" => Err(FormatError::Length),
        _ => Err(FormatError::NotAConceptId),
    }
}

/// ICD-10-CM: a letter, a digit, a letter or digit (`E11`, `C4A`), then optionally a dot
/// and one to four letters or digits (`E11.9`, `S72.001A`). The dot may be missing
/// (`E119`, as many sources send it); letter case is not significant.
pub fn icd10cm(code: &str) -> Result<(), FormatError> {
    let b = code.as_bytes();
    if b.is_empty() {
        return Err(FormatError::Empty);
    }
    let (head, tail) = match code.split_once('.') {
        Some((h, t)) if !t.is_empty() && h.len() == 3 => (h.as_bytes(), t.as_bytes()),
        Some(_) => return Err(FormatError::Pattern),
        None if b.len() >= 3 => (&b[..3], &b[3..]),
        None => return Err(FormatError::Pattern),
    };
    let ok = head[0].is_ascii_alphabetic()
        && head[1].is_ascii_digit()
        && head[2].is_ascii_alphanumeric()
        && tail.len() <= 4
        && tail.iter().all(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(FormatError::Pattern)
    }
}

/// RxNorm: an RxCUI, an integer of 1 to 9 digits without leading zero (`197361`).
pub fn rxnorm(code: &str) -> Result<(), FormatError> {
    if code.is_empty() {
        return Err(FormatError::Empty);
    }
    if !all_digits(code) {
        return Err(FormatError::NotDigits);
    }
    if code.len() > 9 {
        return Err(FormatError::Length);
    }
    if code.as_bytes()[0] == b'0' {
        return Err(FormatError::LeadingZero);
    }
    Ok(())
}

/// CVX: 1 to 3 digits, leading zeros as CDC writes them (`08`, `140`).
pub fn cvx(code: &str) -> Result<(), FormatError> {
    if code.is_empty() {
        return Err(FormatError::Empty);
    }
    if !all_digits(code) {
        return Err(FormatError::NotDigits);
    }
    if code.len() > 3 {
        return Err(FormatError::Length);
    }
    Ok(())
}

/// CPT: four digits and a digit, `F` (category II) or `T` (category III).
pub fn cpt(code: &str) -> Result<(), FormatError> {
    let b = code.as_bytes();
    if b.is_empty() {
        return Err(FormatError::Empty);
    }
    if b.len() != 5 {
        return Err(FormatError::Length);
    }
    if b[..4].iter().all(u8::is_ascii_digit) && matches!(b[4], b'0'..=b'9' | b'F' | b'T') {
        Ok(())
    } else {
        Err(FormatError::NotDigits)
    }
}

/// The shape of a well-formed NDC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NdcForm {
    /// A 10-digit NDC with hyphens (4-4-2, 5-3-2, 5-4-1) or an 11-digit one (5-4-2 with
    /// hyphens, or 11 bare digits): its 11-digit 5-4-2 form, as RxNorm keeps it.
    Eleven(String),
    /// Ten bare digits: a real NDC shape, but which segment lacks its leading zero is
    /// unknown, so it has no single 11-digit form.
    TenUnsegmented,
}

/// NDC: 10 digits in 4-4-2, 5-3-2 or 5-4-1 segments, or 11 digits (5-4-2 or bare).
pub fn ndc(code: &str) -> Result<NdcForm, FormatError> {
    if code.is_empty() {
        return Err(FormatError::Empty);
    }
    if all_digits(code) {
        return match code.len() {
            11 => Ok(NdcForm::Eleven(code.to_string())),
            10 => Ok(NdcForm::TenUnsegmented),
            _ => Err(FormatError::Length),
        };
    }
    let mut parts = code.split('-');
    let (Some(a), Some(b), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(FormatError::NdcSegments);
    };
    if !all_digits(a) || !all_digits(b) || !all_digits(d) {
        return Err(FormatError::NotDigits);
    }
    if !matches!(
        (a.len(), b.len(), d.len()),
        (4, 4, 2) | (5, 3, 2) | (5, 4, 1) | (5, 4, 2)
    ) {
        return Err(FormatError::NdcSegments);
    }
    Ok(NdcForm::Eleven(format!("{a:0>5}{b:0>4}{d:0>2}")))
}

/// The 11-digit 5-4-2 form of an NDC, when it has exactly one.
pub fn ndc_11(code: &str) -> Option<String> {
    match ndc(code) {
        Ok(NdcForm::Eleven(s)) => Some(s),
        _ => None,
    }
}

/// NPI: 10 digits whose last is the Luhn check digit of the first nine prefixed with the
/// health-industry issuer number `80840` (`1234567893`). The prefix adds a constant 24 to
/// the Luhn sum.
pub fn npi(value: &str) -> Result<(), FormatError> {
    let b = value.as_bytes();
    if b.is_empty() {
        return Err(FormatError::Empty);
    }
    if !all_digits(value) {
        return Err(FormatError::NotDigits);
    }
    if b.len() != 10 {
        return Err(FormatError::Length);
    }
    // In "80840" + nine digits + check, counted from the right, the prefix's 0 and 4 are
    // doubled (0 + 8) and its 8, 8 and 0 are not (16): 24 whatever the nine digits are.
    if u32::from(b[9] - b'0') != luhn_check_digit(&b[..9], 24) {
        return Err(FormatError::CheckDigit);
    }
    Ok(())
}
