//! Transaction keys: RFC 3261 §17.2.3 (server side, with the RFC 2543 fallback) and §17.1.3
//! (client side).

use crate::sip::msg::{Method, Request, Response};

/// The key of a server transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerKey {
    /// RFC 3261 §17.2.3: branch (with the magic cookie), sent-by and method, where ACK matches
    /// the INVITE it acknowledges.
    Rfc3261 {
        branch: String,
        sent_by: String,
        method: String,
    },
    /// RFC 2543 peers (no magic cookie, RFC 4475 §3.4.1): Request-URI, From tag, Call-ID,
    /// CSeq number, top Via and method (ACK as INVITE). The To tag is compared separately,
    /// because an ACK carries the tag of our response.
    Rfc2543 {
        request_uri: String,
        from_tag: String,
        call_id: String,
        cseq: u32,
        top_via: String,
        method: String,
    },
}

fn method_for_matching(m: &Method) -> String {
    match m {
        Method::Ack => Method::Invite.to_string(),
        other => other.to_string(),
    }
}

impl ServerKey {
    /// The key of the transaction `req` belongs to.
    pub fn of_request(req: &Request) -> ServerKey {
        Self::with_method(req, &req.method)
    }

    /// The key of the INVITE transaction a CANCEL refers to (RFC 3261 §9.2: same key, method
    /// INVITE).
    pub fn cancelled_invite(req: &Request) -> ServerKey {
        Self::with_method(req, &Method::Invite)
    }

    fn with_method(req: &Request, method: &Method) -> ServerKey {
        let via = &req.core.top_via;
        if via.has_rfc3261_branch() {
            ServerKey::Rfc3261 {
                branch: via.branch.clone().unwrap_or_default(),
                sent_by: via.sent_by(),
                method: method_for_matching(method),
            }
        } else {
            ServerKey::Rfc2543 {
                request_uri: req.uri.raw().to_string(),
                from_tag: req.core.from_tag.clone().unwrap_or_default(),
                call_id: req.core.call_id.clone(),
                cseq: req.core.cseq.seq,
                top_via: req.core.vias.first().cloned().unwrap_or_default(),
                method: method_for_matching(method),
            }
        }
    }
}

/// The key of a client transaction (RFC 3261 §17.1.3): our branch and the CSeq method.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey {
    pub branch: String,
    pub method: String,
}

impl ClientKey {
    pub fn of_request(req: &Request) -> ClientKey {
        ClientKey {
            branch: req.core.top_via.branch.clone().unwrap_or_default(),
            method: req.method.to_string(),
        }
    }

    pub fn of_response(resp: &Response) -> ClientKey {
        ClientKey {
            branch: resp.core.top_via.branch.clone().unwrap_or_default(),
            method: resp.core.cseq.method.to_string(),
        }
    }
}

/// The key used to detect merged requests (RFC 3261 §8.2.2.2): a request without a To tag
/// whose From tag, Call-ID and CSeq match a transaction in progress but whose transaction key
/// differs arrived twice by different paths, and is answered 482.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MergeKey {
    pub from_tag: String,
    pub call_id: String,
    pub cseq: u32,
    pub method: String,
}

impl MergeKey {
    pub fn of_request(req: &Request) -> Option<MergeKey> {
        if req.core.to_tag.is_some() || req.method == Method::Ack || req.method == Method::Cancel {
            return None;
        }
        Some(MergeKey {
            from_tag: req.core.from_tag.clone()?,
            call_id: req.core.call_id.clone(),
            cseq: req.core.cseq.seq,
            method: req.method.to_string(),
        })
    }
}
