//! The shape of `src/`, checked: which modules may import which, and that no file and no folder
//! of `src/` sits in an import circle. Imports are read from the source the way a reader follows
//! them: `crate::a::b`, `super::x`, and a parent's `child::` paths (comments, inline
//! `#[cfg(test)] mod tests { … }` and `tests.rs` files skipped: tests may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

struct Source {
    modules: BTreeMap<Module, String>,
}

impl Source {
    fn read() -> Source {
        let mut modules = BTreeMap::new();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                    continue;
                }
                let rel = path.strip_prefix(&root).unwrap().with_extension("");
                let mut parts: Module = rel
                    .iter()
                    .map(|p| p.to_str().unwrap().to_string())
                    .collect();
                if parts.last().map(String::as_str) == Some("mod") {
                    parts.pop();
                }
                if parts == ["lib"] || parts == ["main"] || parts.last().unwrap() == "tests" {
                    continue;
                }
                modules.insert(parts, code_of(&std::fs::read_to_string(&path).unwrap()));
            }
        }
        Source { modules }
    }

    /// The module a path names: its longest prefix that is a module of `src/`.
    fn resolve(&self, path: &[String]) -> Option<Module> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| self.modules.contains_key(m))
    }

    fn edges(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        let mut out = BTreeMap::new();
        for (module, code) in &self.modules {
            let mut to = BTreeSet::new();
            for (kind, path) in paths_in(code) {
                let full: Vec<String> = match kind {
                    Root::Crate => path,
                    Root::Super => {
                        let mut base = module[..module.len() - 1].to_vec();
                        base.extend(path);
                        base
                    }
                    Root::Plain => {
                        let mut base = module.clone();
                        base.extend(path);
                        base
                    }
                };
                if let Some(target) = self.resolve(&full) {
                    let child_of_plain = kind != Root::Plain || target.len() > module.len();
                    if &target != module && child_of_plain {
                        to.insert(target);
                    }
                }
            }
            out.insert(module.clone(), to);
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Crate,
    Super,
    /// `child::…` inside a parent module.
    Plain,
}

/// The source without comments and without its unit-test module.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            // Not a `//` inside a string such as "https://…".
            Some(i) if l[..i].matches('"').count() % 2 == 0 => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::…`, `super::…` and `name::…` path in `code`, split into segments.
fn paths_in(code: &str) -> Vec<(Root, Vec<String>)> {
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !ident(bytes[i]) || (i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let mut segments = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && ident(bytes[j]) {
                j += 1;
            }
            segments.push(code[start..j].to_string());
            if code[j..].starts_with("::") && j + 2 < bytes.len() && ident(bytes[j + 2]) {
                j += 2;
            } else {
                break;
            }
        }
        // `pub(in crate::x)` is a visibility, not an import.
        let visibility = code[..i].trim_end().ends_with("(in");
        // `a::{…}` and `a::*` name `a`.
        let group = code[j..].starts_with("::{") || code[j..].starts_with("::*");
        if (segments.len() > 1 || group) && !visibility {
            let root = match segments[0].as_str() {
                "crate" => Root::Crate,
                "super" => Root::Super,
                "self" => Root::Plain,
                _ => Root::Plain,
            };
            if matches!(segments[0].as_str(), "crate" | "super" | "self") {
                segments.remove(0);
            }
            while segments.first().map(String::as_str) == Some("super") {
                segments.remove(0); // `super::super` is not used in src/
            }
            out.push((root, segments));
        }
        i = j.max(i + 1);
    }
    out
}

/// The strongly connected components of more than one module (Tarjan).
fn circles(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<BTreeSet<Module>> {
    struct State<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        out: Vec<BTreeSet<Module>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Module) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.edges[v] {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                component.insert(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn name(m: &Module) -> String {
    m.join("/")
}

/// The folder (top-level module) a module belongs to: `policy/model` → `policy`.
fn folder(m: &Module) -> Module {
    vec![m[0].clone()]
}

fn described(found: &[BTreeSet<Module>]) -> Vec<Vec<String>> {
    found.iter().map(|c| c.iter().map(name).collect()).collect()
}

#[test]
fn no_file_sits_in_an_import_circle() {
    let source = Source::read();
    assert!(source.modules.len() > 50, "src/ was read");
    let found = circles(&source.edges());
    assert!(
        found.is_empty(),
        "files in an import circle: {:?}",
        described(&found)
    );
}

#[test]
fn no_folder_sits_in_an_import_circle() {
    let source = Source::read();
    let mut folders: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, to) in source.edges() {
        let entry = folders.entry(folder(&from)).or_default();
        entry.extend(to.iter().map(folder).filter(|f| *f != folder(&from)));
    }
    for to in folders.clone().into_values().flatten() {
        folders.entry(to).or_default();
    }
    assert!(folders.len() > 15, "folders were read: {folders:?}");
    let found = circles(&folders);
    assert!(
        found.is_empty(),
        "folders in an import circle: {:?}",
        described(&found)
    );
}

#[test]
fn the_circle_check_finds_a_circle() {
    let m = |s: &str| vec![s.to_string()];
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    edges.insert(m("a"), [m("b")].into());
    edges.insert(m("b"), [m("c")].into());
    edges.insert(m("c"), [m("a")].into());
    edges.insert(m("d"), [m("a")].into());
    assert_eq!(
        described(&circles(&edges)),
        vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]
    );
}

#[test]
fn the_policy_model_imports_no_runtime_module() {
    let source = Source::read();
    let edges = source.edges();
    let model = &edges[&vec!["policy".to_string(), "model".to_string()]];
    let runtime = [
        "proxy",
        "shared",
        "upstreams",
        "posture",
        "observability",
        "tls",
        "compile",
        "connections",
        "decide",
        "app",
    ];
    // Nothing in the policy folder reaches a runtime module or the compiler.
    for (module, to) in &edges {
        if module[0] != "policy" {
            continue;
        }
        let bad: Vec<String> = to
            .iter()
            .filter(|m| runtime.contains(&m[0].as_str()))
            .map(name)
            .collect();
        assert!(bad.is_empty(), "{} imports {bad:?}", name(module));
    }
    // The edges are read: the model does use the specs it holds.
    assert!(model.contains(&vec!["policy".to_string(), "specs".to_string()]));
}

#[test]
fn the_decisions_know_nothing_of_the_proxy() {
    let source = Source::read();
    let edges = source.edges();
    for (module, code) in &source.modules {
        if module[0] != "decide" {
            continue;
        }
        assert!(
            !code.contains("pingora"),
            "{} names a Pingora type",
            name(module)
        );
        let up: Vec<String> = edges[module]
            .iter()
            .filter(|m| ["proxy", "dryrun", "cli"].contains(&m[0].as_str()))
            .map(name)
            .collect();
        assert!(up.is_empty(), "{} imports {up:?}", name(module));
    }
    // And the circle check sees an edge when there is one.
    let proxy = &edges[&vec!["proxy".to_string()]];
    assert!(proxy.contains(&vec!["decide".to_string()]), "{proxy:?}");
}

#[test]
fn paths_are_read_as_a_reader_follows_them() {
    let code = code_of(
        "use crate::a::b;\n// crate::c::d\nlet x = super::e::f(\"https://g\");\npub(in crate::h) y: u8;\nchild::go();\npub use kid::{A, B};\n",
    );
    let paths = paths_in(&code);
    assert_eq!(
        paths,
        vec![
            (Root::Crate, vec!["a".to_string(), "b".to_string()]),
            (Root::Super, vec!["e".to_string(), "f".to_string()]),
            (Root::Plain, vec!["child".to_string(), "go".to_string()]),
            (Root::Plain, vec!["kid".to_string()]),
        ]
    );
}

#[test]
fn no_public_function_returns_a_string_error() {
    let source = Source::read();
    let mut found = Vec::new();
    for (module, code) in &source.modules {
        for start in ["pub fn ", "pub async fn "] {
            for (i, _) in code.match_indices(start) {
                let sig = &code[i..];
                let end = sig.find(['{', ';']).unwrap_or(sig.len());
                let sig: String = sig[..end].split_whitespace().collect::<Vec<_>>().join(" ");
                let Some(ret) = sig.rsplit("->").next().filter(|_| sig.contains("->")) else {
                    continue;
                };
                let ret = ret.trim();
                if ret.starts_with("Result<") && ret.ends_with(", String>") {
                    found.push(format!("{}: {sig}", name(module)));
                }
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
    // The reader finds signatures: the gateway's entry point is one.
    assert!(source.modules[&vec!["app".to_string()]].contains("pub fn serve("));
}
