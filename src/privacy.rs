//! Phone numbers are personal data: this module masks them for logs and displays.
//! (Pseudonymisation with a keyed HMAC arrives with the CDR issue.)

/// Masks all but the first `keep` characters' worth of digits: `+15551234567` -> `+1555123****`.
/// Short or non-numeric users are masked entirely except their first character.
pub fn mask_number(number: &str) -> String {
    let digits = number.chars().filter(|c| c.is_ascii_digit()).count();
    if digits < 6 {
        return match number.chars().next() {
            Some(c) => format!("{c}***"),
            None => String::new(),
        };
    }
    let hide = 4.min(digits);
    let mut seen = 0;
    number
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen > digits - hide { '*' } else { c }
            } else {
                c
            }
        })
        .collect()
}

/// Masks every phone number in free text (a flow's `log()` and `print`, error messages, URLs)
/// before it is written anywhere: a run of 7 or more digits, with an optional leading `+`
/// and single separators between the digits (`-`, `.`, space, `(`, `)`, `/`, as people
/// and E.164's display forms write them), keeps its first digits and loses its last four,
/// as [`mask_number`] does. Shorter runs (times, PINs of 4-6 digits, amounts) are left.
pub fn mask_numbers_in(text: &str) -> std::borrow::Cow<'_, str> {
    const MIN_DIGITS: usize = 7;
    let bytes = text.as_bytes();
    let is_sep = |b: u8| matches!(b, b'-' | b'.' | b' ' | b'(' | b')' | b'/');
    // Quick exit: most lines hold no long digit run.
    if bytes.iter().filter(|b| b.is_ascii_digit()).count() < MIN_DIGITS {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        let starts = bytes[i].is_ascii_digit()
            || (bytes[i] == b'+' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
            || (bytes[i] == b'(' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit));
        // A run starts at a digit (or `+`/`(` before one) not glued to a letter or digit,
        // except after a URL-encoded `+` (`%2B`).
        let encoded_plus = i >= 3 && bytes[i - 3..i].eq_ignore_ascii_case(b"%2b");
        if !starts || (i > 0 && bytes[i - 1].is_ascii_alphanumeric() && !encoded_plus) {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i + 1; // one past the run's last digit
        let mut digits = usize::from(bytes[i].is_ascii_digit());
        let mut j = i + 1;
        while j < bytes.len() {
            if bytes[j].is_ascii_digit() {
                digits += 1;
                j += 1;
                end = j;
            } else if is_sep(bytes[j]) {
                // One or two separators (`) `, ` (`) and then a digit carry the run on.
                let seps = bytes[j..].iter().take(3).take_while(|&&b| is_sep(b)).count();
                if seps <= 2 && bytes.get(j + seps).is_some_and(u8::is_ascii_digit) {
                    j += seps;
                } else {
                    break;
                }
            } else {
                break;
            }
        }
        if digits >= MIN_DIGITS && !is_iso_date(&bytes[start..end]) {
            out.push_str(&text[copied..start]);
            out.push_str(&mask_number(&text[start..end]));
            copied = end;
        }
        i = end.max(i + 1);
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    std::borrow::Cow::Owned(out)
}

/// `YYYY-MM-DD` (ISO 8601 dates are not phone numbers, and logs are full of them).
fn is_iso_date(run: &[u8]) -> bool {
    run.len() == 10
        && run.iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        })
}

/// Masks an optional number, `-` when absent.
pub fn mask_opt(number: Option<&str>) -> String {
    number.map(mask_number).unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_free_text_are_masked_and_the_rest_is_kept() {
        let m = |t| mask_numbers_in(t).into_owned();
        assert_eq!(m("caller +14155550123 pressed 1"), "caller +1415555**** pressed 1");
        assert_eq!(m("call 415-555-0123 now"), "call 415-555-**** now");
        assert_eq!(m("(415) 555 0123"), "(415) 555 ****");
        assert_eq!(
            m("https://crm.example/lookup?n=%2B14155550123&x=1"),
            "https://crm.example/lookup?n=%2B1415555****&x=1"
        );
        assert_eq!(
            m("+44 20 7946 0958, +33 1 23 45 67 89"),
            "+44 20 7946 ****, +33 1 23 45 ** **"
        );
        assert_eq!(
            m("at 2026-12-07T08:00:00Z from 0612345678"),
            "at 2026-12-07T08:00:00Z from 061234****"
        );
        // Not numbers: short runs, times, amounts, PINs, ids glued to letters.
        for kept in [
            "pin 1234 at 12:30:45",
            "total 1234.56 EUR",
            "id abc1234567",
            "2026-12-07",
            "v1.2.3",
        ] {
            assert_eq!(m(kept), kept);
        }
        // Non-ASCII text around a number survives.
        assert_eq!(m("Señor 0612345678 ¿sí?"), "Señor 061234**** ¿sí?");
    }

    #[test]
    fn masks_the_last_four_digits() {
        assert_eq!(mask_number("+18005550100"), "+1800555****");
        assert_eq!(mask_number("15550100300"), "1555010****");
    }

    #[test]
    fn short_users_are_masked_whole() {
        assert_eq!(mask_number("alice"), "a***");
        assert_eq!(mask_number("123"), "1***");
        assert_eq!(mask_number(""), "");
    }
}
