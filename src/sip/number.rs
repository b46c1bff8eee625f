//! Dialled numbers: the normal form used for routing until `flow::dialplan` lands.

/// Reduces a dialled user part to `+digits` when it is a number (`tel`-style visual
/// separators `-.() ` removed, RFC 3966 §5.1.1); returns `None` for non-numeric users.
pub fn normalise(user: &str) -> Option<String> {
    let trimmed = user.split(';').next().unwrap_or(user);
    let mut out = String::with_capacity(trimmed.len() + 1);
    for (i, c) in trimmed.chars().enumerate() {
        match c {
            '+' if i == 0 => {}
            '0'..='9' => out.push(c),
            '-' | '.' | '(' | ')' | ' ' => {}
            _ => return None,
        }
    }
    if out.is_empty() {
        return None;
    }
    // NANP numbers dialled without the country code or without '+'.
    if out.len() == 10 && !trimmed.starts_with('+') {
        out.insert(0, '1');
    }
    Some(format!("+{out}"))
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
    }
}
