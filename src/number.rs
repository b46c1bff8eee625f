//! Phone numbers: the E.164 normal form (ITU-T E.164; RFC 3966 §5.1.1 visual separators)
//! used for routing, pseudonyms and CDRs, and the kind of a dialled number, from
//! libphonenumber's metadata (the `phonenumber` crate).

use phonenumber::country::Id;
use phonenumber::{Mode, Type};
use serde::{Deserialize, Serialize};

/// What kind of number was dialled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialledKind {
    TollFree,
    Geographic,
    Mobile,
    Other,
}

impl DialledKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DialledKind::TollFree => "toll_free",
            DialledKind::Geographic => "geographic",
            DialledKind::Mobile => "mobile",
            DialledKind::Other => "other",
        }
    }
}

/// Reduces a dialled user part (or a `tel:` number) to `+digits`, reading national forms
/// as numbers of `region` (NANP when `None`). Returns `None` for users that are not numbers
/// (`alice`). Numbers the metadata does not know (fictional 555 numbers, new ranges) keep
/// their digits: routing must not depend on the metadata being current.
pub fn normalise_in(user: &str, region: Option<Id>) -> Option<String> {
    let trimmed = user.split(';').next().unwrap_or(user);
    let mut digits = String::with_capacity(trimmed.len() + 1);
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '+' if i == 0 => {}
            '0'..='9' => digits.push(c),
            '-' | '.' | '(' | ')' | ' ' => {}
            _ => return None,
        }
    }
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let international = trimmed.starts_with('+');
    let region = region.unwrap_or(Id::US);
    // Fast paths (no metadata: parsing with it costs tens of microseconds, and every call
    // has two numbers): `+digits` as carriers send it is already E.164, and so are the NANP
    // national forms.
    let plain = trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'+');
    if plain && international {
        return Some(format!("+{digits}"));
    }
    if plain && region == Id::US {
        let b = digits.as_bytes();
        if b.len() == 10 && (b'2'..=b'9').contains(&b[0]) {
            return Some(format!("+1{digits}"));
        }
        if b.len() == 11 && b[0] == b'1' && (b'2'..=b'9').contains(&b[1]) {
            return Some(format!("+{digits}"));
        }
    }
    let valid_e164 = |text: &str, country: Option<Id>| {
        phonenumber::parse(country, text)
            .ok()
            .filter(|n| n.is_valid())
            .map(|n| n.format().mode(Mode::E164).to_string())
    };
    if international {
        return Some(valid_e164(&format!("+{digits}"), None).unwrap_or_else(|| format!("+{digits}")));
    }
    // A national form of the region, else an international number sent without '+'.
    if let Some(n) = valid_e164(&digits, Some(region)).or_else(|| valid_e164(&format!("+{digits}"), None)) {
        return Some(n);
    }
    // Unknown to the metadata: NANP forms dialled without the country code or the '+'.
    if region == Id::US && digits.len() == 10 {
        digits.insert(0, '1');
    }
    Some(format!("+{digits}"))
}

/// The region named by a two-letter country code (`GB`, `us`), for national numbers.
pub fn region(code: &str) -> Option<Id> {
    if code.len() != 2 {
        return None;
    }
    code.to_ascii_uppercase().parse::<Id>().ok()
}

/// [`normalise_in`] for the default region (NANP).
pub fn normalise(user: &str) -> Option<String> {
    normalise_in(user, None)
}

/// Loads libphonenumber's metadata (it is parsed on first use, which takes long enough to
/// delay a call): call once at start-up.
pub fn warm_up() {
    let _ = classify_uncached("+442071234567");
}

/// NANP toll-free area codes (the metadata lists them too; kept for numbers it rejects).
const NANP_TOLL_FREE: [&str; 7] = ["800", "833", "844", "855", "866", "877", "888"];

/// The kind of an E.164 number: toll-free (NANP 8XX, UK 0800/0808, UIFN +800 per ITU-T
/// E.169.1, and every other freephone range the metadata knows), mobile, geographic, or other.
pub fn classify(e164: &str) -> DialledKind {
    // Dialled numbers repeat (a gateway serves a set of DIDs): remember the answers.
    static CACHE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, DialledKind>>> =
        std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(kind) = cache.lock().ok().and_then(|c| c.get(e164).copied()) {
        return kind;
    }
    let kind = classify_uncached(e164);
    if let Ok(mut c) = cache.lock() {
        if c.len() >= 10_000 {
            c.clear();
        }
        c.insert(e164.to_string(), kind);
    }
    kind
}

fn classify_uncached(e164: &str) -> DialledKind {
    let Some(d) = e164.strip_prefix('+') else {
        return DialledKind::Other;
    };
    if d.is_empty() || !d.bytes().all(|b| b.is_ascii_digit()) {
        return DialledKind::Other;
    }
    if let Ok(n) = phonenumber::parse(None, e164) {
        match n.number_type(&phonenumber::metadata::DATABASE) {
            Type::TollFree => return DialledKind::TollFree,
            Type::Mobile => return DialledKind::Mobile,
            Type::FixedLine | Type::FixedLineOrMobile => return DialledKind::Geographic,
            Type::Unknown => {}
            _ => return DialledKind::Other,
        }
    }
    // Outside the metadata: NANP's shape is regular enough to read (555 numbers, new codes).
    if d.len() == 11 && d.starts_with('1') {
        return if NANP_TOLL_FREE.contains(&&d[1..4]) {
            DialledKind::TollFree
        } else {
            DialledKind::Geographic
        };
    }
    DialledKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_of_the_same_number_agree() {
        for n in [
            "+15550100300",
            "15550100300",
            "5550100300",
            "+1-555-010-0300",
            "+15550100300;npdi",
        ] {
            assert_eq!(normalise(n).as_deref(), Some("+15550100300"), "{n}");
        }
        assert_eq!(normalise("alice"), None);
        assert_eq!(normalise(""), None);
        assert_eq!(normalise("+"), None);
    }

    #[test]
    fn national_forms_follow_the_region() {
        assert_eq!(
            normalise_in("08001234567", Some(Id::GB)).as_deref(),
            Some("+448001234567")
        );
        assert_eq!(
            normalise_in("020 7123 4567", Some(Id::GB)).as_deref(),
            Some("+442071234567")
        );
        assert_eq!(normalise_in("(800) 555-0100", None).as_deref(), Some("+18005550100"));
        // International without '+'.
        assert_eq!(normalise_in("442071234567", None).as_deref(), Some("+442071234567"));
        // Valid numbers come out in the metadata's E.164 form.
        // The metadata knows the UK trunk prefix written in brackets.
        assert_eq!(normalise("+44 (0)20 7123 4567").as_deref(), Some("+442071234567"));
    }

    #[test]
    fn kinds() {
        for n in [
            "+18005550100",
            "+18335550100",
            "+18445550100",
            "+18555550100",
            "+18665550100",
            "+18775550100",
            "+18885550100",
            "+448001234567",
            "+448081234567",
            "+80012345678",
        ] {
            assert_eq!(classify(n), DialledKind::TollFree, "{n}");
        }
        assert_eq!(classify("+15550100300"), DialledKind::Geographic);
        assert_eq!(classify("+12025550123"), DialledKind::Geographic);
        assert_eq!(classify("+447911123456"), DialledKind::Mobile);
        assert_eq!(classify("+442071234567"), DialledKind::Geographic);
        assert_eq!(classify("+33612345678"), DialledKind::Mobile);
        assert_eq!(classify("+33142685300"), DialledKind::Geographic);
        assert_eq!(classify("+4930123456"), DialledKind::Geographic);
        assert_eq!(classify("+449090901234"), DialledKind::Other); // premium rate
        assert_eq!(classify("alice"), DialledKind::Other);
        assert_eq!(classify("+1800abc0100"), DialledKind::Other);
    }
}
