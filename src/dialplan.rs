//! The dialplan: a directory holding `numbers.toml`, `flows/*.rhai` and `rooms.toml`.
//! `numbers.toml` maps a dialled number (normalised to E.164, classified) and the trunk a call
//! came in on to a flow, a tenant, a retention class and CDR tags; the flows are compiled
//! ([`crate::flow`]); `rooms.toml` gives rooms their PINs and behaviour ([`crate::room::settings`]).
//! A plan is loaded whole or not at all: any error (TOML, an unknown flow, a bad pattern, a flow
//! that does not compile, a bad room) rejects the plan with `file:line: reason`, and the plan
//! already serving keeps serving.
//!
//! Owns: routing and the composition of flows and rooms. It sits above both, so flows never
//! read room tables (`room_role` is answered by the call, through the flow's port).
//!
//! Matching, most specific first: routes for the call's trunk before routes for any trunk;
//! within those, an exact number before a pattern, and a pattern with more fixed digits before
//! one with fewer; then `[default]`.

use crate::file_text::FileError;
use crate::file_text::line_of;
use crate::flow::FlowLibrary;
use crate::flow::engine::Limits;
use crate::number;
use crate::number::DialledKind;
use crate::room::settings::{self as room_settings, RoomTable};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `room_role` answered from `rooms`, for the flow simulator (a real call asks its rooms).
pub fn room_roles(rooms: RoomTable) -> crate::flow::sim::RoomRoles {
    Arc::new(move |room: &str, pin: &str| {
        room_settings::role_in(&rooms, room, pin, &crate::room::pins::PinKey::default())
    })
}

/// Where a route sends a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Flow(String),
    /// Refuse with this SIP status.
    Reject(u16),
}

/// The result of routing one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub dialled: String,
    pub kind: DialledKind,
    pub target: Target,
    pub tenant: Option<String>,
    pub retention: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// `numbers.toml:LINE` of the route (or `default`), for logs.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Exact(String),
    Pattern(Vec<PatternItem>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternItem {
    Digit(u8),
    /// X: any digit; N: 2-9; Z: 1-9.
    Any,
    TwoToNine,
    OneToNine,
    /// A trailing `*`: any further digits (zero or more).
    Rest,
}

#[derive(Debug, Clone)]
struct Route {
    matcher: Matcher,
    trunk: Option<String>,
    target: Target,
    tenant: Option<String>,
    retention: Option<String>,
    tags: BTreeMap<String, String>,
    line: usize,
}

/// A loaded dialplan with its compiled flows.
pub struct Dialplan {
    pub dir: PathBuf,
    region: Option<phonenumber::country::Id>,
    routes: Vec<Route>,
    default: Option<(Target, usize)>,
    pub flows: Arc<FlowLibrary>,
    /// `rooms.toml`: room PINs and behaviour (empty when the file is absent).
    pub rooms: RoomTable,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanToml {
    region: Option<String>,
    #[serde(default)]
    route: Vec<toml::Spanned<RouteToml>>,
    default: Option<toml::Spanned<DefaultToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteToml {
    number: Option<String>,
    #[serde(default)]
    numbers: Vec<String>,
    pattern: Option<String>,
    trunk: Option<String>,
    flow: Option<String>,
    reject: Option<u16>,
    tenant: Option<String>,
    retention: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultToml {
    flow: Option<String>,
    reject: Option<u16>,
}

fn target(flow: Option<String>, reject: Option<u16>) -> Result<Target, String> {
    match (flow, reject) {
        (Some(f), None) if !f.is_empty() => Ok(Target::Flow(f)),
        (None, Some(r)) if (400..=699).contains(&r) => Ok(Target::Reject(r)),
        (None, Some(r)) => Err(format!("reject = {r}: a SIP status from 400 to 699")),
        (Some(_), Some(_)) => Err("give `flow` or `reject`, not both".into()),
        _ => Err("give `flow = \"name\"` or `reject = 404`".into()),
    }
}

fn parse_pattern(p: &str) -> Result<Vec<PatternItem>, String> {
    let body = p
        .strip_prefix('+')
        .ok_or_else(|| format!("pattern `{p}` must start with + (E.164)"))?;
    let mut items = Vec::new();
    let chars: Vec<char> = body.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        items.push(match c {
            '0'..='9' => PatternItem::Digit(*c as u8 - b'0'),
            'X' | 'x' => PatternItem::Any,
            'N' | 'n' => PatternItem::TwoToNine,
            'Z' | 'z' => PatternItem::OneToNine,
            '*' if i + 1 == chars.len() => PatternItem::Rest,
            _ => {
                return Err(format!("pattern `{p}`: `{c}` is not a digit, X, N, Z or a trailing *"));
            }
        });
    }
    if items.is_empty() {
        return Err(format!("pattern `{p}` is empty"));
    }
    Ok(items)
}

fn pattern_matches(items: &[PatternItem], e164: &str) -> bool {
    let Some(digits) = e164.strip_prefix('+') else {
        return false;
    };
    let d = digits.as_bytes();
    let mut i = 0;
    for item in items {
        if *item == PatternItem::Rest {
            return true;
        }
        let Some(&c) = d.get(i) else { return false };
        let ok = match item {
            PatternItem::Digit(x) => c == b'0' + x,
            PatternItem::Any => c.is_ascii_digit(),
            PatternItem::TwoToNine => (b'2'..=b'9').contains(&c),
            PatternItem::OneToNine => (b'1'..=b'9').contains(&c),
            PatternItem::Rest => true,
        };
        if !ok {
            return false;
        }
        i += 1;
    }
    i == d.len()
}

/// How specific a route is (higher wins).
fn rank(route: &Route) -> (bool, u8, usize) {
    let fixed = match &route.matcher {
        Matcher::Exact(_) => usize::MAX,
        Matcher::Pattern(items) => items.iter().filter(|i| matches!(i, PatternItem::Digit(_))).count(),
    };
    (
        route.trunk.is_some(),
        u8::from(matches!(route.matcher, Matcher::Exact(_))),
        fixed,
    )
}

impl Dialplan {
    /// Loads `dir/numbers.toml`, compiles `dir/flows/*.rhai` and reads `dir/rooms.toml`.
    /// `classes` are the retention classes routes may name (empty: any). Errors of the flows
    /// and of rooms.toml are reported together.
    pub fn load(dir: &Path, limits: Limits, classes: &[String]) -> Result<Dialplan, Vec<FileError>> {
        let (flows, rooms) = match (
            FlowLibrary::compile_dir(&dir.join("flows"), limits),
            room_settings::load(dir),
        ) {
            (Ok(flows), Ok(rooms)) => (flows, rooms),
            (flows, rooms) => {
                let mut errors = flows.err().unwrap_or_default();
                errors.extend(rooms.err().unwrap_or_default());
                return Err(errors);
            }
        };
        let file = dir.join("numbers.toml");
        let text = std::fs::read_to_string(&file).map_err(|e| {
            vec![FileError {
                file: file.clone(),
                line: 0,
                reason: format!("cannot read: {e}"),
            }]
        })?;
        let mut plan = Self::from_text(dir, &file, &text, Arc::new(flows), classes)?;
        plan.rooms = room_settings::table(rooms);
        Ok(plan)
    }

    /// Parses a plan's text against compiled `flows`.
    pub fn from_text(
        dir: &Path,
        file: &Path,
        text: &str,
        flows: Arc<FlowLibrary>,
        classes: &[String],
    ) -> Result<Dialplan, Vec<FileError>> {
        let at = |line: usize, reason: String| FileError {
            file: file.to_path_buf(),
            line,
            reason,
        };
        let plan: PlanToml = crate::file_text::parse_toml(file, text)?;
        let mut errors = Vec::new();
        let region = match plan.region.as_deref() {
            None => None,
            Some(r) => match number::region(r) {
                Some(id) => Some(id),
                None => {
                    errors.push(at(
                        1,
                        format!("region `{r}` is not a two-letter country code (US, GB...)"),
                    ));
                    None
                }
            },
        };
        let known_flow = |name: &str| flows.get(name).is_some();
        let mut routes = Vec::new();
        let mut seen: HashSet<(String, Option<String>)> = HashSet::new();
        for spanned in plan.route {
            let line = line_of(text, spanned.span().start);
            let r = spanned.into_inner();
            let target = match target(r.flow, r.reject) {
                Ok(t) => t,
                Err(why) => {
                    errors.push(at(line, why));
                    continue;
                }
            };
            if let Target::Flow(f) = &target
                && !known_flow(f)
            {
                errors.push(at(
                    line,
                    format!(
                        "flow `{f}` does not exist (no flows/{f}.rhai; have: {})",
                        flows.names().join(", ")
                    ),
                ));
            }
            if let Some(c) = &r.retention
                && !classes.is_empty()
                && !classes.contains(c)
            {
                errors.push(at(
                    line,
                    format!("retention class `{c}` is not a policy (have: {})", classes.join(", ")),
                ));
            }
            let tags: BTreeMap<String, String> = r
                .tags
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        toml::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, v)
                })
                .collect();
            let mut matchers = Vec::new();
            for n in r.number.iter().chain(r.numbers.iter()) {
                match number::normalise_in(n, region) {
                    Some(e164) => matchers.push(Matcher::Exact(e164)),
                    None => errors.push(at(line, format!("`{n}` is not a phone number"))),
                }
            }
            if let Some(p) = &r.pattern {
                match parse_pattern(p) {
                    Ok(items) => matchers.push(Matcher::Pattern(items)),
                    Err(why) => errors.push(at(line, why)),
                }
            }
            if matchers.is_empty() && r.pattern.is_none() && r.number.is_none() && r.numbers.is_empty() {
                errors.push(at(line, "a route needs `number`, `numbers` or `pattern`".into()));
            }
            for m in matchers {
                if let Matcher::Exact(e) = &m
                    && !seen.insert((e.clone(), r.trunk.clone()))
                {
                    errors.push(at(line, format!("{e} is routed twice for the same trunk")));
                    continue;
                }
                routes.push(Route {
                    matcher: m,
                    trunk: r.trunk.clone(),
                    target: target.clone(),
                    tenant: r.tenant.clone(),
                    retention: r.retention.clone(),
                    tags: tags.clone(),
                    line,
                });
            }
        }
        let default = match plan.default {
            None => None,
            Some(d) => {
                let line = line_of(text, d.span().start);
                let d = d.into_inner();
                match target(d.flow, d.reject) {
                    Ok(Target::Flow(f)) if !known_flow(&f) => {
                        errors.push(at(line, format!("default flow `{f}` does not exist")));
                        None
                    }
                    Ok(t) => Some((t, line)),
                    Err(why) => {
                        errors.push(at(line, why));
                        None
                    }
                }
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        // Load libphonenumber's metadata here rather than under the first call, and fill the
        // classification cache with the routed numbers.
        number::warm_up();
        for r in &routes {
            if let Matcher::Exact(e) = &r.matcher {
                number::classify(e);
            }
        }
        // Most specific first; the sort is stable, so file order breaks ties.
        routes.sort_by_key(|r| std::cmp::Reverse(rank(r)));
        Ok(Dialplan {
            dir: dir.to_path_buf(),
            region,
            routes,
            default,
            flows,
            rooms: RoomTable::default(),
        })
    }

    /// Routes a dialled user part (any form) arriving on `trunk`.
    pub fn route(&self, dialled: &str, trunk: Option<&str>) -> RouteMatch {
        let e164 = number::normalise_in(dialled, self.region);
        let kind = e164.as_deref().map(number::classify).unwrap_or(DialledKind::Other);
        let dialled_out = e164.clone().unwrap_or_else(|| dialled.to_string());
        if let Some(e) = &e164 {
            for r in &self.routes {
                if r.trunk.as_deref().is_some_and(|t| Some(t) != trunk) {
                    continue;
                }
                let hit = match &r.matcher {
                    Matcher::Exact(x) => x == e,
                    Matcher::Pattern(items) => pattern_matches(items, e),
                };
                if hit {
                    return RouteMatch {
                        dialled: dialled_out,
                        kind,
                        target: r.target.clone(),
                        tenant: r.tenant.clone(),
                        retention: r.retention.clone(),
                        tags: r.tags.clone(),
                        source: format!("numbers.toml:{}", r.line),
                    };
                }
            }
        }
        let (target, source) = match &self.default {
            Some((t, line)) => (t.clone(), format!("numbers.toml:{line} (default)")),
            None => (Target::Reject(404), "no route".to_string()),
        };
        RouteMatch {
            dialled: dialled_out,
            kind,
            target,
            tenant: None,
            retention: None,
            tags: BTreeMap::new(),
            source,
        }
    }
}
