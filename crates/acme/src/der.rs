//! The validity of an X.509 certificate (RFC 5280 §4.1.2.5), read from its DER: the one field
//! the manager needs, without a whole X.509 parser.

use model::Timestamp;

use crate::decide::Validity;

/// `notBefore` and `notAfter` of a DER certificate, or `None` when it is not one.
pub fn validity(der: &[u8]) -> Option<Validity> {
    let (certificate, _) = element(der, 0x30)?;
    let (tbs, _) = element(certificate, 0x30)?;
    let mut rest = tbs;
    // version [0] EXPLICIT, optional
    if rest.first() == Some(&0xa0) {
        rest = element(rest, 0xa0)?.1;
    }
    rest = element(rest, 0x02)?.1; // serialNumber
    rest = element(rest, 0x30)?.1; // signature
    rest = element(rest, 0x30)?.1; // issuer
    let (validity, _) = element(rest, 0x30)?;
    let (not_before, after) = time(validity)?;
    let (not_after, _) = time(after)?;
    Some(Validity { not_before, not_after })
}

/// The contents of the element of type `tag` at the start of `input`, and what follows it.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, rest) = rest.split_first()?;
    let (len, rest) = if len < 0x80 {
        (len as usize, rest)
    } else {
        let n = (len & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) at the start of `input`.
fn time(input: &[u8]) -> Option<(Timestamp, &[u8])> {
    let (tag, digits_year) = match input.first()? {
        0x17 => (0x17, 2),
        0x18 => (0x18, 4),
        _ => return None,
    };
    let (text, rest) = element(input, tag)?;
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    if text.len() != digits_year + 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |from: usize, len: usize| text[from..from + len].parse::<i64>().ok();
    let mut year = num(0, digits_year)?;
    if digits_year == 2 {
        // RFC 5280: 50-99 are 19xx, 00-49 are 20xx.
        year += if year >= 50 { 1900 } else { 2000 };
    }
    let o = digits_year;
    let (month, day) = (num(o, 2)?, num(o + 2, 2)?);
    let (hour, minute, second) = (num(o + 4, 2)?, num(o + 6, 2)?, num(o + 8, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Some((Timestamp::from_millis(u64::try_from(seconds).ok()? * 1000), rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn validity_is_read_from_utc_and_generalized_times() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050 on, as RFC 5280 says.
        let v = validity(&certificate((2026, 12, 6), (2051, 3, 1))).unwrap();
        assert_eq!(v.not_before, Timestamp::from_millis(1_796_515_200_000), "2026-12-06");
        assert_eq!(v.not_after, Timestamp::from_millis(2_561_241_600_000), "2051-03-01");
        assert_eq!(validity(b"not a certificate"), None);
        assert_eq!(validity(&[0x30, 0x82, 0xff]), None);
    }
}
