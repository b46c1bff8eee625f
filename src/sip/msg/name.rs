//! Header names and the header list (RFC 3261 §7.3): names compare case-insensitively and
//! compact forms (§7.3.3, RFC 4028 `x`, RFC 3515 `r`...) mean their long form.
//!
//! Our own small type rather than `ezk-sip-types`' `Name`/`Headers`: a profile of the parser
//! showed about 40% of the time of parsing an INVITE spent comparing `ezk` names (each
//! comparison walks the print and parse spellings). Here a name is classified once, when the
//! line is read, and compared as a short lower-case string after that.

use std::borrow::Cow;
use std::fmt;

/// A header name: the canonical lower-case long form, and how to print it.
#[derive(Clone, Debug)]
pub struct Name {
    canonical: Cow<'static, str>,
    display: Cow<'static, str>,
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for Name {}

macro_rules! known_names {
    ($( $konst:ident = $display:literal, $canon:literal $(, $compact:literal)? ; )+) => {
        impl Name {
            $(
                pub const $konst: Name = Name {
                    canonical: Cow::Borrowed($canon),
                    display: Cow::Borrowed($display),
                };
            )+

            /// Classifies a name as received (any case, compact or long form).
            pub fn parse(raw: &str) -> Name {
                $(
                    if raw.eq_ignore_ascii_case($canon) $(|| raw.eq_ignore_ascii_case($compact))? {
                        return Name::$konst;
                    }
                )+
                Name {
                    canonical: Cow::Owned(raw.to_ascii_lowercase()),
                    display: Cow::Owned(raw.to_string()),
                }
            }
        }
    };
}

known_names! {
    ACCEPT = "Accept", "accept";
    ACCEPT_ENCODING = "Accept-Encoding", "accept-encoding";
    ALLOW = "Allow", "allow";
    ALLOW_EVENTS = "Allow-Events", "allow-events", "u";
    AUTHORIZATION = "Authorization", "authorization";
    CALL_ID = "Call-ID", "call-id", "i";
    CONTACT = "Contact", "contact", "m";
    CONTENT_ENCODING = "Content-Encoding", "content-encoding", "e";
    CONTENT_LENGTH = "Content-Length", "content-length", "l";
    CONTENT_TYPE = "Content-Type", "content-type", "c";
    CSEQ = "CSeq", "cseq";
    EVENT = "Event", "event", "o";
    FROM = "From", "from", "f";
    MAX_FORWARDS = "Max-Forwards", "max-forwards";
    MIN_SE = "Min-SE", "min-se";
    P_ASSERTED_IDENTITY = "P-Asserted-Identity", "p-asserted-identity";
    PRIVACY = "Privacy", "privacy";
    RACK = "RAck", "rack";
    RECORD_ROUTE = "Record-Route", "record-route";
    REFER_TO = "Refer-To", "refer-to", "r";
    REFERRED_BY = "Referred-By", "referred-by", "b";
    REQUIRE = "Require", "require";
    RETRY_AFTER = "Retry-After", "retry-after";
    ROUTE = "Route", "route";
    RSEQ = "RSeq", "rseq";
    SERVER = "Server", "server";
    SESSION_EXPIRES = "Session-Expires", "session-expires", "x";
    SUBJECT = "Subject", "subject", "s";
    SUPPORTED = "Supported", "supported", "k";
    TIMESTAMP = "Timestamp", "timestamp";
    TO = "To", "to", "t";
    UNSUPPORTED = "Unsupported", "unsupported";
    USER_AGENT = "User-Agent", "user-agent";
    VIA = "Via", "via", "v";
    WARNING = "Warning", "warning";
    WWW_AUTHENTICATE = "WWW-Authenticate", "www-authenticate";
}

impl Name {
    /// How the name is printed: the standard spelling for known names, else as received.
    pub fn as_print_str(&self) -> &str {
        &self.display
    }

    /// The canonical lower-case long form.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }
}

impl From<&str> for Name {
    fn from(raw: &str) -> Name {
        Name::parse(raw)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// Headers in arrival order (order matters for Route, Record-Route and Via, RFC 3261 §7.3.1).
#[derive(Clone, Debug, Default)]
pub struct Headers {
    entries: Vec<(Name, String)>,
}

impl Headers {
    pub fn new() -> Headers {
        Headers::default()
    }

    pub fn with_capacity(n: usize) -> Headers {
        Headers {
            entries: Vec::with_capacity(n),
        }
    }

    /// Appends a header line.
    pub fn insert(&mut self, name: Name, value: impl Into<String>) {
        self.entries.push((name, value.into()));
    }

    /// Every value of `name`, in order.
    pub fn get_raw<'a>(&'a self, name: &'a Name) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn contains(&self, name: &Name) -> bool {
        self.entries.iter().any(|(n, _)| n == name)
    }

    /// Removes every `name` header, returning the values.
    pub fn remove(&mut self, name: &Name) -> Vec<String> {
        let mut removed = Vec::new();
        self.entries.retain(|(n, v)| {
            if n == name {
                removed.push(v.clone());
                false
            } else {
                true
            }
        });
        removed
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Name, &str)> {
        self.entries.iter().map(|(n, v)| (n, v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_long_forms_are_the_same_name() {
        // RFC 3261 §7.3.3
        for (compact, long) in [
            ("v", Name::VIA),
            ("f", Name::FROM),
            ("t", Name::TO),
            ("i", Name::CALL_ID),
            ("m", Name::CONTACT),
            ("l", Name::CONTENT_LENGTH),
            ("c", Name::CONTENT_TYPE),
            ("k", Name::SUPPORTED),
            ("x", Name::SESSION_EXPIRES),
        ] {
            assert_eq!(Name::parse(compact), long);
            assert_eq!(Name::parse(&compact.to_uppercase()), long);
        }
        assert_eq!(Name::parse("cALL-iD"), Name::CALL_ID);
        assert_eq!(Name::parse("CALL-ID").as_print_str(), "Call-ID");
    }

    #[test]
    fn unknown_names_keep_their_spelling_and_compare_ignoring_case() {
        let n = Name::parse("X-Carrier-Id");
        assert_eq!(n.as_print_str(), "X-Carrier-Id");
        assert_eq!(n, Name::parse("x-carrier-id"));
        assert_ne!(n, Name::VIA);
    }

    #[test]
    fn headers_keep_order_and_find_every_value() {
        let mut h = Headers::new();
        h.insert(Name::ROUTE, "<sip:a;lr>");
        h.insert(Name::parse("X"), "1");
        h.insert(Name::ROUTE, "<sip:b;lr>");
        assert_eq!(
            h.get_raw(&Name::ROUTE).collect::<Vec<_>>(),
            vec!["<sip:a;lr>", "<sip:b;lr>"]
        );
        assert_eq!(h.remove(&Name::ROUTE).len(), 2);
        assert_eq!(h.len(), 1);
    }
}
