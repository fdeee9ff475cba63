//! The shape of the source tree, held: no file under `src/` over 600 lines, no import circle
//! between the files of `src/`, and `main.rs` reaching the library only through `command`.
//!
//! Imports are read from the source text: every `use` (trees expanded) and every inline
//! `crate::…`, `super::…` or `self::…` path of a file (`roomcast::…` in `main.rs`) (its `#[cfg(test)]` module left out) is
//! resolved to the file that defines the item it names, following `pub use` re-exports; a
//! glob names the module it reads. An `impl` of a type in another file is not an import.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

type Module = Vec<String>;

struct Source {
    path: PathBuf,
    /// The text without comments, string contents and the test module.
    code: String,
}

/// Every `.rs` file under `dir` with its module path (`src/a/mod.rs` and `src/a.rs` are `a`;
/// `lib.rs` is the crate root; `main.rs` is kept apart as `<main>`).
fn sources(dir: &Path) -> BTreeMap<Module, Source> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(dir).unwrap().with_extension("");
            let mut module: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().to_string())
                .collect();
            match module.last().map(String::as_str) {
                Some("mod") => {
                    module.pop();
                }
                Some("lib") if module.len() == 1 => module.clear(),
                Some("main") if module.len() == 1 => module = vec!["<main>".into()],
                _ => {}
            }
            let text = std::fs::read_to_string(&p).unwrap();
            let code = without_test_module(&strip(&text));
            out.insert(module, Source { path: p, code });
        }
    }
    out
}

/// `src` without comments and with string and character literals emptied.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == b'r' && matches!(b.get(i + 1), Some(b'"' | b'#')) && !ident_before(b, i) {
            // A raw string: r"…", r#"…"#, …
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c as char);
                i += 1;
                continue;
            }
            j += 1;
            let end = format!("\"{}", "#".repeat(hashes));
            match src[j..].find(&end) {
                Some(k) => i = j + k + end.len(),
                None => i = b.len(),
            }
            out.push_str("\"\"");
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' && is_char_literal(b, i) {
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            // Multi-byte characters are copied whole.
            let ch = src[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

fn ident_before(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// `'x'`, `'\n'`, `'\u{..}'` rather than a lifetime `'a`.
fn is_char_literal(b: &[u8], i: usize) -> bool {
    match b.get(i + 1) {
        Some(b'\\') => true,
        Some(_) => {
            // One character (possibly multi-byte) then a closing quote.
            let mut j = i + 1;
            j += 1;
            while j < b.len() && (b[j] & 0xC0) == 0x80 {
                j += 1;
            }
            b.get(j) == Some(&b'\'')
        }
        None => false,
    }
}

/// The code before an inline `#[cfg(test)] mod name {`.
fn without_test_module(code: &str) -> String {
    let mut from = 0;
    while let Some(k) = code[from..].find("#[cfg(test)]") {
        let at = from + k;
        let rest = code[at + "#[cfg(test)]".len()..].trim_start();
        let rest = rest.strip_prefix("pub ").unwrap_or(rest);
        if let Some(after) = rest.strip_prefix("mod ") {
            let decl_end = after.find([';', '{']).unwrap_or(after.len());
            if after[decl_end..].starts_with('{') {
                return code[..at].to_string();
            }
        }
        from = at + 1;
    }
    code.to_string()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The names a file defines at its top level (and in nested blocks: enough to tell a
/// module's own items from what it re-exports).
fn defined(code: &str) -> BTreeSet<String> {
    const KINDS: [&str; 9] = [
        "struct", "enum", "fn", "trait", "type", "const", "static", "mod", "union",
    ];
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let mut words: Vec<&str> = line
            .split(|c: char| !is_ident(c) && c != '!')
            .filter(|w| !w.is_empty())
            .collect();
        if words.first() == Some(&"pub") {
            words.remove(0);
            // pub(crate), pub(super), pub(in path): the parenthesised words.
            if line.trim_start().starts_with("pub(") {
                let inner = line.trim_start()[4..].split(')').next().unwrap_or("");
                let n = inner
                    .split(|c: char| !is_ident(c))
                    .filter(|w| !w.is_empty())
                    .count();
                words.drain(..n.min(words.len()));
            }
        }
        while matches!(words.first(), Some(&("async" | "unsafe" | "extern"))) {
            words.remove(0);
        }
        if words.first() == Some(&"const") && words.get(1) == Some(&"fn") {
            words.remove(0);
        }
        if let [kind, name, ..] = words[..] {
            if KINDS.contains(&kind) || kind == "macro_rules!" {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// A `use` tree expanded into (path, name it binds).
fn expand(prefix: &[String], tree: &str, out: &mut Vec<(Module, String)>) {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let (path, alias) = match tree.split_once(" as ") {
            Some((p, a)) => (p.trim(), Some(a.trim().to_string())),
            None => (tree, None),
        };
        let mut full = prefix.to_vec();
        full.extend(
            path.split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
        let name = alias.unwrap_or_else(|| full.last().cloned().unwrap_or_default());
        if !full.is_empty() {
            out.push((full, name));
        }
        return;
    };
    let mut pre = prefix.to_vec();
    pre.extend(
        tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from),
    );
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                expand(&pre, &inner[start..i], out);
                start = i + 1;
            }
            _ => {}
        }
    }
    expand(&pre, &inner[start..], out);
}

struct Uses {
    /// (public, path, bound name)
    uses: Vec<(bool, Module, String)>,
    /// Inline `crate::`/`super::`/`self::` paths.
    inline: Vec<Module>,
}

fn uses_of(code: &str) -> Uses {
    let mut uses = Vec::new();
    let b = code.as_bytes();
    let mut from = 0;
    while let Some(k) = code[from..].find("use ") {
        let at = from + k;
        from = at + 4;
        if ident_before(b, at) {
            continue;
        }
        let before = code[..at].trim_end();
        let public = before.ends_with("pub")
            || (before.ends_with(')') && {
                let open = before.rfind("pub(").unwrap_or(0);
                before[open..].starts_with("pub(") && !before[open..].contains(['{', ';'])
            });
        let statement_start = before.is_empty() || before.ends_with([';', '{', '}', ']']) || public;
        if !statement_start {
            continue;
        }
        let Some(end) = code[at..].find(';') else {
            break;
        };
        let mut expanded = Vec::new();
        expand(&[], &code[at + 4..at + end], &mut expanded);
        uses.extend(expanded.into_iter().map(|(p, n)| (public, p, n)));
        from = at + end;
    }
    let mut inline = Vec::new();
    for root in ["crate::", "super::", "self::", "roomcast::"] {
        let mut from = 0;
        while let Some(k) = code[from..].find(root) {
            let at = from + k;
            from = at + root.len();
            if ident_before(b, at) || (at >= 2 && &code[at - 2..at] == "::") {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(is_ident(c) || c == ':'))
                .map_or(code.len(), |e| at + e);
            let path: Module = code[at..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            inline.push(path);
        }
    }
    Uses { uses, inline }
}

struct Tree {
    modules: BTreeSet<Module>,
    defs: HashMap<Module, BTreeSet<String>>,
    reexports: HashMap<Module, HashMap<String, Module>>,
}

impl Tree {
    /// `path` as written in `module` made absolute (from the crate root); None for an
    /// outside crate.
    fn absolute(&self, module: &Module, path: &Module) -> Option<Module> {
        let base: Module = if module == &vec!["<main>".to_string()] {
            Vec::new()
        } else {
            module.clone()
        };
        let first = path.first()?.as_str();
        match first {
            "crate" => Some(path[1..].to_vec()),
            "roomcast" if module == &vec!["<main>".to_string()] => Some(path[1..].to_vec()),
            "self" => Some([base, path[1..].to_vec()].concat()),
            "super" => {
                let mut cur = base;
                let mut rest = &path[..];
                while rest.first().map(String::as_str) == Some("super") {
                    cur.pop();
                    rest = &rest[1..];
                }
                Some([cur, rest.to_vec()].concat())
            }
            _ => {
                // A path that starts with a child module of this one.
                let child = [base.clone(), vec![first.to_string()]].concat();
                self.modules
                    .contains(&child)
                    .then(|| [base, path.clone()].concat())
            }
        }
    }

    /// The file that defines what `path` (absolute) names.
    fn resolve(&self, path: &Module, depth: usize) -> Option<Module> {
        if depth > 16 {
            return None;
        }
        for k in (0..=path.len()).rev() {
            let pre = path[..k].to_vec();
            if !self.modules.contains(&pre) {
                continue;
            }
            let Some(name) = path.get(k) else {
                return Some(pre);
            };
            if name == "*" || self.defs[&pre].contains(name) {
                return Some(pre);
            }
            if let Some(target) = self.reexports[&pre].get(name) {
                let mut next = target.clone();
                next.extend(path[k + 1..].iter().cloned());
                return self.resolve(&next, depth + 1).or(Some(pre));
            }
            return Some(pre);
        }
        None
    }
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("::")
    }
}

/// A circle in `edges`, if there is one, as the modules along it.
fn find_circle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        marks: &mut HashMap<Module, Mark>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        marks.insert(m.clone(), Mark::Open);
        stack.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|x| x == next).unwrap();
                    let mut circle = stack[from..].to_vec();
                    circle.push(next.clone());
                    return Some(circle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(c) = visit(next, edges, marks, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(m.clone(), Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    for m in edges.keys() {
        if !marks.contains_key(m) {
            if let Some(c) = visit(m, edges, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

struct Graph {
    files: BTreeMap<Module, BTreeSet<Module>>,
    main_reaches: BTreeSet<String>,
}

fn graph(src: &Path) -> Graph {
    let sources = sources(src);
    let parsed: BTreeMap<Module, Uses> = sources
        .iter()
        .map(|(m, s)| (m.clone(), uses_of(&s.code)))
        .collect();
    let mut tree = Tree {
        modules: sources.keys().cloned().collect(),
        defs: sources
            .iter()
            .map(|(m, s)| (m.clone(), defined(&s.code)))
            .collect(),
        reexports: sources
            .keys()
            .map(|m| (m.clone(), HashMap::new()))
            .collect(),
    };
    for (m, u) in &parsed {
        for (public, path, bound) in &u.uses {
            if !public || bound == "*" {
                continue;
            }
            let target = tree
                .absolute(m, path)
                .unwrap_or_else(|| [m.clone(), path.clone()].concat());
            tree.reexports
                .get_mut(m)
                .unwrap()
                .insert(bound.clone(), target);
        }
    }
    let mut files: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    let mut main_reaches = BTreeSet::new();
    let main = vec!["<main>".to_string()];
    for (m, u) in &parsed {
        let paths = u
            .uses
            .iter()
            .filter(|(public, ..)| !public)
            .map(|(_, p, _)| p)
            .chain(u.inline.iter());
        for path in paths {
            let Some(abs) = tree.absolute(m, path) else {
                continue;
            };
            if m == &main {
                main_reaches.insert(abs.first().cloned().unwrap_or_default());
            }
            if let Some(target) = tree.resolve(&abs, 0) {
                if &target != m {
                    files.entry(m.clone()).or_default().insert(target);
                }
            }
        }
    }
    Graph {
        files,
        main_reaches,
    }
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_file_under_src_is_over_600_lines() {
    let long: Vec<String> = sources(&src_dir())
        .values()
        .filter_map(|s| {
            let n = std::fs::read_to_string(&s.path).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", s.path.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}

#[test]
fn no_file_of_src_imports_in_a_circle() {
    let g = graph(&src_dir());
    if let Some(circle) = find_circle(&g.files) {
        let shown: Vec<String> = circle.iter().map(name).collect();
        panic!("import circle: {}", shown.join(" -> "));
    }
    // The check sees imports at all: the job layers are read, top to bottom.
    let job_kinds = vec![
        "job".to_string(),
        "kinds".to_string(),
        "execute".to_string(),
    ];
    assert!(
        g.files[&job_kinds]
            .iter()
            .any(|t| t.starts_with(&["job".to_string(), "run".to_string()])),
        "execute's imports of the run layer were not seen"
    );
}

#[test]
fn no_top_level_module_imports_in_a_circle() {
    let g = graph(&src_dir());
    let mut top: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, targets) in &g.files {
        for to in targets {
            if let (Some(a), Some(b)) = (from.first(), to.first()) {
                if a != b {
                    top.entry(vec![a.clone()])
                        .or_default()
                        .insert(vec![b.clone()]);
                }
            }
        }
    }
    if let Some(circle) = find_circle(&top) {
        let shown: Vec<String> = circle.iter().map(name).collect();
        panic!("modules import each other: {}", shown.join(" -> "));
    }
}

/// The layers of `job/`, bottom first (see `src/job/mod.rs`).
const JOB_LAYERS: [&str; 5] = ["spec", "files", "media", "run", "kinds"];

#[test]
fn job_layers_import_only_from_below() {
    let g = graph(&src_dir());
    let layer = |m: &Module| -> Option<usize> {
        match m.as_slice() {
            [job, layer, ..] if job == "job" => JOB_LAYERS.iter().position(|l| l == layer),
            _ => None,
        }
    };
    let mut upward = Vec::new();
    for (from, targets) in &g.files {
        let Some(a) = layer(from) else { continue };
        for to in targets {
            if layer(to).is_some_and(|b| b > a) {
                upward.push(format!("{} -> {}", name(from), name(to)));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "job/ imports from a layer above: {upward:?}"
    );
    let seen: BTreeSet<usize> = g.files.keys().filter_map(layer).collect();
    assert_eq!(
        seen.len(),
        JOB_LAYERS.len(),
        "every job layer is a folder with files"
    );
}

#[test]
fn main_reaches_the_library_only_through_command() {
    let g = graph(&src_dir());
    assert_eq!(
        g.main_reaches,
        BTreeSet::from(["command".to_string()]),
        "main.rs uses more of the library than command"
    );
}

#[test]
fn a_planted_circle_is_found() {
    let dir = std::env::temp_dir().join(format!("roomcast-structure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(
        dir.join("a/mod.rs"),
        "//! use crate::b::Nothing; (a comment)\nmod c;\npub use c::Thing;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("a/c.rs"),
        "use crate::b::helper;\npub struct Thing;\nfn f() { helper() }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "pub fn helper() { let s = \"crate::nothing\"; }\nfn g(_: crate::a::Thing) {}\n",
    )
    .unwrap();
    let g = graph(&dir);
    let circle: Vec<String> = find_circle(&g.files)
        .expect("the planted circle")
        .iter()
        .map(name)
        .collect();
    // Through the re-export, to the file that defines the type.
    assert!(circle.contains(&"a::c".to_string()), "{circle:?}");
    assert!(circle.contains(&"b".to_string()), "{circle:?}");
    assert!(!circle.contains(&"a".to_string()), "{circle:?}");
    std::fs::remove_dir_all(&dir).ok();
}
