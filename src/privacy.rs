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

/// Masks an optional number, `-` when absent.
pub fn mask_opt(number: Option<&str>) -> String {
    number.map(mask_number).unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
