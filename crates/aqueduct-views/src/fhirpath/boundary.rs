//! `lowBoundary()` and `highBoundary()`: the least and greatest value a decimal, date,
//! dateTime or time of limited precision can stand for (`1.0` → 0.95 / 1.05,
//! `1970-06` → 1970-06-01 / 1970-06-30; a dateTime without a time zone takes the widest one,
//! +14:00 low and -12:00 high).

use super::eval::Item;

pub(super) fn boundary<'a>(item: &Item<'a>, high: bool) -> Option<Item<'a>> {
    match item {
        Item::Int(i) => decimal(*i as f64, 0, high),
        Item::Dec(d) => decimal(*d, precision(&d.to_string()), high),
        Item::Node(serde_json::Value::Number(n), _) => {
            let v = n.as_f64()?;
            decimal(v, precision(&n.to_string()), high)
        }
        Item::Node(serde_json::Value::String(s), ty) => temporal(s, *ty, high),
        Item::Str(s, ty) => temporal(s, *ty, high),
        _ => None,
    }
}

fn precision(text: &str) -> u32 {
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    mantissa
        .split_once('.')
        .map_or(0, |(_, frac)| frac.len() as u32)
}

fn decimal<'a>(v: f64, digits: u32, high: bool) -> Option<Item<'a>> {
    if digits > 15 || !v.is_finite() {
        return None;
    }
    let half = 0.5 * 10f64.powi(-(digits as i32));
    let b = if high { v + half } else { v - half };
    let text = format!("{:.*}", (digits + 1) as usize, b);
    text.parse().ok().map(Item::Dec)
}

fn temporal<'a>(s: &str, ty: Option<&'static str>, high: bool) -> Option<Item<'a>> {
    match ty {
        Some("date") => date(s, high).map(|d| Item::Str(d, Some("date"))),
        Some("dateTime" | "instant") => date_time(s, high).map(|d| Item::Str(d, Some("dateTime"))),
        Some("time") => time(s, high).map(|t| Item::Str(t, Some("time"))),
        Some(_) => None,
        None if s.contains('T') => date_time(s, high).map(|d| Item::Str(d, Some("dateTime"))),
        None if s.len() >= 5 && s.as_bytes().get(2) == Some(&b':') => {
            time(s, high).map(|t| Item::Str(t, Some("time")))
        }
        None => date(s, high).map(|d| Item::Str(d, Some("date"))),
    }
}

fn digits(s: &str, n: usize) -> Option<u32> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// `(year, month, day)` of a date of any precision, filled for the boundary.
fn date_parts(s: &str, high: bool) -> Option<(u32, u32, u32)> {
    let mut parts = s.split('-');
    let year = digits(parts.next()?, 4)?;
    let month = match parts.next() {
        Some(m) => digits(m, 2).filter(|m| (1..=12).contains(m))?,
        None if high => 12,
        None => 1,
    };
    let day = match parts.next() {
        Some(d) => digits(d, 2).filter(|d| *d >= 1 && *d <= days_in_month(year, month))?,
        None if high => days_in_month(year, month),
        None => 1,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((year, month, day))
}

fn date(s: &str, high: bool) -> Option<String> {
    let (y, m, d) = date_parts(s, high)?;
    Some(format!("{y:04}-{m:02}-{d:02}"))
}

/// `hh:mm:ss.fff` of a time of any precision, filled for the boundary.
fn time_parts(s: &str, high: bool) -> Option<String> {
    let (hms, frac) = match s.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let mut parts = hms.split(':');
    let h = digits(parts.next()?, 2).filter(|h| *h < 24)?;
    let fill = if high { 59 } else { 0 };
    let m = match parts.next() {
        Some(m) => digits(m, 2).filter(|m| *m < 60)?,
        None => fill,
    };
    let sec = match parts.next() {
        Some(x) => digits(x, 2).filter(|x| *x < 60)?,
        None => fill,
    };
    if parts.next().is_some() {
        return None;
    }
    let mut ms = match frac {
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            f.chars().take(3).collect::<String>()
        }
        Some(_) => return None,
        None => String::new(),
    };
    while ms.len() < 3 {
        ms.push(if high { '9' } else { '0' });
    }
    Some(format!("{h:02}:{m:02}:{sec:02}.{ms}"))
}

fn time(s: &str, high: bool) -> Option<String> {
    time_parts(s, high)
}

fn date_time(s: &str, high: bool) -> Option<String> {
    let (date_s, rest) = match s.split_once('T') {
        Some((d, r)) => (d, Some(r)),
        None => (s, None),
    };
    let (y, m, d) = date_parts(date_s, high)?;
    let (clock, zone) = match rest {
        None => (None, None),
        Some(r) => {
            if let Some(c) = r.strip_suffix('Z') {
                (Some(c), Some("Z".to_string()))
            } else if let Some(pos) = r.rfind(['+', '-']) {
                (Some(&r[..pos]), Some(r[pos..].to_string()))
            } else {
                (Some(r), None)
            }
        }
    };
    let t = match clock {
        Some(c) if !c.is_empty() => time_parts(c, high)?,
        _ if high => "23:59:59.999".to_string(),
        _ => "00:00:00.000".to_string(),
    };
    let zone = zone.unwrap_or_else(|| if high { "-12:00" } else { "+14:00" }.to_string());
    Some(format!("{y:04}-{m:02}-{d:02}T{t}{zone}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(item: Option<Item<'_>>) -> String {
        match item {
            Some(Item::Str(s, _)) => s,
            Some(Item::Dec(d)) => d.to_string(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn boundaries_widen_by_half_the_last_digit_or_to_the_ends_of_the_period() {
        let one = serde_json::json!(1.0);
        assert_eq!(s(boundary(&Item::Node(&one, None), false)), "0.95");
        assert_eq!(s(boundary(&Item::Node(&one, None), true)), "1.05");
        assert_eq!(s(boundary(&Item::Int(3), true)), "3.5");
        let d = Item::Str("1970-06".into(), Some("date"));
        assert_eq!(s(boundary(&d, false)), "1970-06-01");
        assert_eq!(s(boundary(&d, true)), "1970-06-30");
        let feb = Item::Str("2024-02".into(), Some("date"));
        assert_eq!(s(boundary(&feb, true)), "2024-02-29");
        let dt = Item::Str("2010-10-10".into(), Some("dateTime"));
        assert_eq!(s(boundary(&dt, false)), "2010-10-10T00:00:00.000+14:00");
        assert_eq!(s(boundary(&dt, true)), "2010-10-10T23:59:59.999-12:00");
        let t = Item::Str("12:34:00".into(), Some("time"));
        assert_eq!(s(boundary(&t, true)), "12:34:00.999");
        let z = Item::Str("2010-10-10T10:00:00.5Z".into(), Some("dateTime"));
        assert_eq!(s(boundary(&z, true)), "2010-10-10T10:00:00.599Z");
        assert!(boundary(&Item::Str("garbage".into(), Some("date")), true).is_none());
    }
}
