//! Call flows: business clients' Rhai scripts, the numbers that lead to them, and the
//! threads they run on.
//!
//! | module | owns |
//! |---|---|
//! | [`port`] | what a flow asks of its call (requests, replies, hangup) |
//! | [`api`] | the verbs scripts call, built on the port's primitives |
//! | [`engine`] | the sandboxed Rhai engine, limits, the per-step time budget |
//! | [`runner`] | flow threads from a capped pool; what happens when a flow fails |
//! | [`sim`] | a simulated caller for `tolk flow run` and tests |
//!
//! Flows never touch sockets, files or the database: everything goes through the port.

pub mod api;
pub mod engine;
pub mod http;
pub mod port;
pub mod runner;
pub mod sim;

use crate::file_text::FileError;
use engine::Limits;
use rhai::{AST, Engine};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The compiled flows of a dialplan directory (`flows/*.rhai`), sharing one engine.
pub struct FlowLibrary {
    pub engine: Arc<Engine>,
    pub limits: Limits,
    flows: HashMap<String, Arc<AST>>,
}

impl FlowLibrary {
    pub fn empty(limits: Limits) -> FlowLibrary {
        FlowLibrary {
            engine: Arc::new(engine::build(&limits)),
            limits,
            flows: HashMap::new(),
        }
    }

    /// Compiles and lints every `*.rhai` in `dir`; the flow's name is the file stem. All
    /// errors are returned (a reload is all or nothing).
    pub fn compile_dir(dir: &Path, limits: Limits) -> Result<FlowLibrary, Vec<FileError>> {
        let mut lib = FlowLibrary::empty(limits);
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                return Err(vec![FileError {
                    file: dir.to_path_buf(),
                    line: 0,
                    reason: format!("cannot read the flows directory: {e}"),
                }]);
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
            .collect();
        paths.sort();
        for path in paths {
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
                continue;
            };
            match lib.compile_file(&path) {
                Ok(ast) => {
                    lib.flows.insert(name, Arc::new(ast));
                }
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() { Ok(lib) } else { Err(errors) }
    }

    /// Compiles and lints one file with this library's engine.
    pub fn compile_file(&self, path: &Path) -> Result<AST, Vec<FileError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![FileError {
                file: path.to_path_buf(),
                line: 0,
                reason: format!("cannot read: {e}"),
            }]
        })?;
        let ast = self.engine.compile(&text).map_err(|e| {
            vec![FileError {
                file: path.to_path_buf(),
                line: e.1.line().unwrap_or(0),
                reason: e.0.to_string(),
            }]
        })?;
        let problems = lint(&self.engine, &ast, &text);
        if problems.is_empty() {
            Ok(ast)
        } else {
            Err(problems
                .into_iter()
                .map(|(line, reason)| FileError {
                    file: path.to_path_buf(),
                    line,
                    reason,
                })
                .collect())
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<AST>> {
        self.flows.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.flows.keys().cloned().collect();
        n.sort();
        n
    }

    /// Adds a compiled flow (tests, `tolk flow run FILE`).
    pub fn insert(&mut self, name: &str, ast: AST) {
        self.flows.insert(name.to_string(), Arc::new(ast));
    }
}

/// Calls to functions that exist neither in the host API, the standard library nor the
/// script itself: a typo (`plya("x")`) would otherwise surface only when a caller reaches it.
/// Returns (line, message) pairs.
pub fn lint(engine: &Engine, ast: &AST, text: &str) -> Vec<(usize, String)> {
    let mut known: HashSet<String> = engine
        .gen_fn_signatures(true)
        .into_iter()
        .filter_map(|sig| sig.split('(').next().map(|n| n.trim().to_string()))
        .map(|n| n.rsplit(' ').next().unwrap_or(&n).to_string())
        .collect();
    known.extend(ast.iter_functions().map(|f| f.name.to_string()));
    // Keywords and built-ins Rhai handles itself.
    for k in [
        "if",
        "while",
        "for",
        "switch",
        "loop",
        "return",
        "fn",
        "print",
        "debug",
        "type_of",
        "is_def_fn",
        "is_def_var",
        "Fn",
        "call",
        "curry",
        "throw",
        "try",
        "catch",
        "exit",
        "in",
        "do",
        "until",
        "is_shared",
        "sleep",
    ] {
        known.insert(k.to_string());
    }
    let mut out = BTreeMap::new();
    for (line, name, declared) in calls(text) {
        if !declared && !known.contains(&name) {
            let hint = api::VERBS
                .iter()
                .find(|v| edit_distance(v, &name) <= 2)
                .map(|v| format!(" (did you mean `{v}`?)"))
                .unwrap_or_default();
            out.entry((line, name.clone()))
                .or_insert(format!("unknown function `{name}`{hint}"));
        }
    }
    out.into_iter().map(|((line, _), msg)| (line, msg)).collect()
}

/// `(line, name, is_a_declaration)` of every `name(` outside strings and comments.
fn calls(text: &str) -> Vec<(usize, String, bool)> {
    let b: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let mut prev_word = String::new();
    while i < b.len() {
        let c = b[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if b.get(i + 1) == Some(&'/') => {
                while i < b.len() && b[i] != '\n' {
                    i += 1;
                }
            }
            '/' if b.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < b.len() && !(b[i] == '*' && b.get(i + 1) == Some(&'/')) {
                    if b[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 2;
            }
            '"' | '`' | '\'' => {
                let q = c;
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == '\\' {
                        i += 1;
                    }
                    if b.get(i) == Some(&'\n') {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
                prev_word.clear();
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
                let word: String = b[start..i].iter().collect();
                let mut j = i;
                while j < b.len() && (b[j] == ' ' || b[j] == '\t') {
                    j += 1;
                }
                let after_dot = start > 0 && b[start - 1] == '.';
                if b.get(j) == Some(&'(') && !after_dot {
                    out.push((line, word.clone(), prev_word == "fn"));
                }
                prev_word = word;
            }
            _ => {
                if !c.is_whitespace() {
                    prev_word.clear();
                }
                i += 1;
            }
        }
    }
    out
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
