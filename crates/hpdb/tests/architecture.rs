//! Architecture invariants of hpdb's source, checked on the files themselves:
//!
//! - **No import circle.** No module reaches itself through its paths. A
//!   module is a file (`mod.rs` is its directory's module, `lib.rs` the
//!   crate). An edge `a -> b` is a path in `a` that names something in `b`:
//!   in `use` declarations (grouped trees expanded) and in code, every path
//!   starting with `crate::`, `super::`, `self::` or the name of a child
//!   module `a` declares. A path that ends at a name a module only imports
//!   (`pub use x::Y`, or a private `use` seen by a child through `super::`)
//!   is followed to the module that defines it: re-exporting is not
//!   depending. Test-only code is left out: `#[cfg(test)]` modules, inline
//!   or in files of their own.
//! - **No file over 500 lines.**
//!
//! Why: a circle means no module of it can be understood, tested or moved
//! without all the others (issue 20); a long file usually holds two jobs.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    path::{Path, PathBuf},
};

/// Longest file allowed, in lines.
const MAX_LINES: usize = 500;

/// A module's path from the crate root (`[]` is `lib.rs`).
type ModPath = Vec<String>;

/// One module: its code without comments, strings and test modules, and
/// the names it imports (name -> absolute path).
struct Module {
    code: String,
    imports: HashMap<String, Vec<String>>,
}

#[test]
fn no_module_reaches_itself_through_its_imports() {
    let modules = read_modules(&src_dir());
    let graph = graph(&modules);
    let cycles: Vec<String> = sccs(&graph)
        .into_iter()
        .filter(|scc| scc.len() > 1)
        .map(|scc| describe_cycle(&graph, &scc))
        .collect();
    assert!(
        cycles.is_empty(),
        "import circles among hpdb's modules:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn no_file_is_over_500_lines() {
    let mut long = Vec::new();
    for file in rust_files(&src_dir()) {
        let lines = fs::read_to_string(&file).unwrap().lines().count();
        if lines > MAX_LINES {
            long.push(format!("{} has {lines} lines", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The module a file is, from its path under `src`.
fn module_path(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: ModPath = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn read_modules(src: &Path) -> BTreeMap<ModPath, Module> {
    let mut modules = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    for file in rust_files(src) {
        let path = module_path(src, &file);
        let (code, tests) = strip_tests(&strip_comments_and_strings(
            &fs::read_to_string(&file).unwrap(),
        ));
        for t in tests {
            test_only.insert([path.clone(), vec![t]].concat());
        }
        modules.insert(
            path,
            Module {
                code,
                imports: HashMap::new(),
            },
        );
    }
    modules.retain(|path, _| !test_only.iter().any(|t| path.starts_with(t)));
    let paths: Vec<ModPath> = modules.keys().cloned().collect();
    for path in paths {
        let m = &modules[&path];
        let imports = use_trees(&m.code)
            .into_iter()
            .filter_map(|(segments, name)| {
                let abs = absolute(&path, &segments, &m.code)?;
                Some((name?, abs))
            })
            .collect();
        modules.get_mut(&path).unwrap().imports = imports;
    }
    modules
}

/// `source` with comments and the contents of string and char literals
/// blanked out (so that neither yields paths).
fn strip_comments_and_strings(source: &str) -> String {
    let s: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && s.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&s, i) {
            let mut hashes = 0;
            let mut j = i + 1;
            while s.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if s.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            let closing: String = std::iter::once('"')
                .chain((0..hashes).map(|_| '#'))
                .collect();
            let closing: Vec<char> = closing.chars().collect();
            while j < s.len() && s[j..].iter().take(closing.len()).ne(closing.iter()) {
                j += 1;
            }
            i = j + closing.len();
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < s.len() && s[i] != '"' {
                i += if s[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && is_char_literal(&s, i) {
            i += 1;
            while i < s.len() && s[i] != '\'' {
                i += if s[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(s: &[char], i: usize) -> bool {
    i > 0 && (s[i - 1].is_alphanumeric() || s[i - 1] == '_')
}

/// A `'` that opens a char literal rather than a lifetime.
fn is_char_literal(s: &[char], i: usize) -> bool {
    matches!(
        (s.get(i + 1), s.get(i + 2)),
        (Some('\\'), _) | (Some(_), Some('\''))
    )
}

/// `code` without its `#[cfg(test)]` modules (inline blocks are removed;
/// the names of those in files of their own are returned).
fn strip_tests(code: &str) -> (String, Vec<String>) {
    let mut out = code.to_string();
    let mut files = Vec::new();
    while let Some(at) = out.find("#[cfg(test)]") {
        let rest = &out[at + "#[cfg(test)]".len()..];
        let trimmed = rest.trim_start();
        let Some(decl) = trimmed
            .strip_prefix("mod ")
            .or_else(|| trimmed.strip_prefix("pub(crate) mod "))
        else {
            // A test-only item that is not a module: leave it, but blank
            // the attribute so the search moves on.
            out.replace_range(at..at + "#[cfg(test)]".len(), "            ");
            continue;
        };
        let name: String = decl
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let after_name = decl[name.len()..].trim_start();
        let start = at;
        let end = if after_name.starts_with(';') {
            files.push(name);
            out.len() - after_name.len() + 1
        } else {
            let open = out.len() - after_name.len();
            close_of(&out, open)
        };
        out.replace_range(start..end, "");
    }
    (out, files)
}

/// The index just past the brace that closes the one at `open`.
fn close_of(code: &str, open: usize) -> usize {
    let mut depth = 0;
    for (i, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + i + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// Every path a `use` declaration of `code` names, expanded, with the name
/// it binds (`None` for globs and `self` re-binding nothing new).
fn use_trees(code: &str) -> Vec<(Vec<String>, Option<String>)> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("use ") {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = code[at..].find(';') else {
            continue;
        };
        let tree: String = code[at + 4..at + end]
            .chars()
            .map(|c| if c.is_whitespace() { ' ' } else { c })
            .collect();
        expand(&tree, &[], &mut found);
    }
    found
}

/// Expands one use tree under `prefix`.
fn expand(tree: &str, prefix: &[String], out: &mut Vec<(Vec<String>, Option<String>)>) {
    let tree = tree.trim().trim_start_matches("::");
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = split_path(&tree[..open]);
        let prefix = [prefix, &head].concat();
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        for part in split_top(inner) {
            expand(part, &prefix, out);
        }
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((p, a)) => (p, Some(a.trim().to_string())),
        None => (tree, None),
    };
    let mut segments = [prefix, &split_path(path)].concat();
    match segments.last().map(String::as_str) {
        Some("*") => {
            segments.pop();
            out.push((segments, None));
        }
        Some("self") => {
            segments.pop();
            let name = alias.or_else(|| segments.last().cloned());
            out.push((segments, name));
        }
        Some(last) => {
            let name = alias.or_else(|| Some(last.to_string()));
            out.push((segments, name));
        }
        None => {}
    }
}

fn split_path(path: &str) -> Vec<String> {
    path.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits at the commas not inside braces.
fn split_top(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The child modules `code` declares (`mod x;`).
fn children(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in code.match_indices("mod ") {
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let name: String = code[at + 4..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if code[at + 4 + name.len()..].trim_start().starts_with(';') {
            names.insert(name);
        }
    }
    names
}

/// `segments` as written in module `from`, made absolute (`None`: not a
/// path into this crate).
fn absolute(from: &ModPath, segments: &[String], code: &str) -> Option<Vec<String>> {
    let first = segments.first()?;
    let (mut base, rest) = match first.as_str() {
        "crate" => (Vec::new(), &segments[1..]),
        "self" => (from.clone(), &segments[1..]),
        "super" => {
            let mut base = from.clone();
            let mut rest = segments;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            (base, rest)
        }
        name if children(code).contains(name) => (from.clone(), segments),
        _ => return None,
    };
    base.extend(rest.iter().cloned());
    Some(base)
}

/// The module that defines what `path` names: its longest prefix that is a
/// module, followed through imports of the name after it.
fn target(modules: &BTreeMap<ModPath, Module>, path: &[String], hops: usize) -> Option<ModPath> {
    let module = (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains_key(p))?;
    if hops < 16 {
        if let Some(name) = path.get(module.len()) {
            if let Some(imported) = modules[&module].imports.get(name) {
                let rest = &path[module.len() + 1..];
                let next = [imported.as_slice(), rest].concat();
                if next != path {
                    return target(modules, &next, hops + 1).or(Some(module));
                }
            }
        }
    }
    Some(module)
}

/// Edges: module -> (module it names, the path that names it).
type Graph = BTreeMap<ModPath, BTreeMap<ModPath, String>>;

fn graph(modules: &BTreeMap<ModPath, Module>) -> Graph {
    let mut graph = Graph::new();
    for (from, m) in modules {
        let edges = graph.entry(from.clone()).or_default();
        let mut paths: Vec<Vec<String>> = use_trees(&m.code)
            .into_iter()
            .filter_map(|(segments, _)| absolute(from, &segments, &m.code))
            .collect();
        paths.extend(
            inline_paths(&m.code)
                .into_iter()
                .filter_map(|segments| absolute(from, &segments, &m.code)),
        );
        for path in paths {
            if let Some(to) = target(modules, &path, 0) {
                if &to != from {
                    edges
                        .entry(to)
                        .or_insert_with(|| format!("crate::{}", path.join("::")));
                }
            }
        }
    }
    graph
}

/// Paths in code (outside `use`) that start with `crate`, `super`, `self`
/// or any name followed by `::` (the caller keeps those into this crate).
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = code.chars().collect();
    let mut paths = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if (chars[i].is_alphabetic() || chars[i] == '_') && !ident_before(&chars, i) {
            let mut segments = Vec::new();
            let mut j = i;
            loop {
                let start = j;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                segments.push(chars[start..j].iter().collect::<String>());
                if chars.get(j) == Some(&':')
                    && chars.get(j + 1) == Some(&':')
                    && chars
                        .get(j + 2)
                        .is_some_and(|c| c.is_alphabetic() || *c == '_')
                {
                    j += 2;
                } else {
                    break;
                }
            }
            if segments.len() > 1 {
                paths.push(segments);
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    paths
}

/// Strongly connected components (Tarjan), each sorted.
fn sccs(graph: &Graph) -> Vec<Vec<ModPath>> {
    struct State<'g> {
        graph: &'g Graph,
        index: HashMap<&'g ModPath, usize>,
        low: HashMap<&'g ModPath, usize>,
        stack: Vec<&'g ModPath>,
        on_stack: BTreeSet<&'g ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g ModPath) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph[v].keys() {
            let Some((w, _)) = s.graph.get_key_value(w) else {
                continue;
            };
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.clone());
                if w == v {
                    break;
                }
            }
            scc.sort();
            s.out.push(scc);
        }
    }
    let mut s = State {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn name(m: &ModPath) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// A circle of `scc`'s modules and one shortest cycle through its first
/// module, each step with the path that makes it.
fn describe_cycle(graph: &Graph, scc: &[ModPath]) -> String {
    let members: BTreeSet<&ModPath> = scc.iter().collect();
    let start = &scc[0];
    // Breadth-first from `start` within the component, back to `start`.
    let mut prev: HashMap<&ModPath, &ModPath> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut last = None;
    'search: while let Some(v) = queue.pop_front() {
        for w in graph[v].keys().filter(|w| members.contains(w)) {
            if w == start {
                last = Some(v);
                break 'search;
            }
            if !prev.contains_key(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    let mut cycle = vec![start];
    let mut v = last.expect("a component has a cycle");
    while v != start {
        cycle.push(v);
        v = prev[v];
    }
    cycle.push(start);
    let n = cycle.len();
    cycle[1..n - 1].reverse();
    let steps: Vec<String> = cycle
        .windows(2)
        .map(|w| {
            format!(
                "  {} -> {}  ({})",
                name(w[0]),
                name(w[1]),
                graph[w[0]][w[1]]
            )
        })
        .collect();
    format!(
        "a circle of {} modules: {}\n one cycle:\n{}",
        scc.len(),
        scc.iter().map(name).collect::<Vec<_>>().join(", "),
        steps.join("\n")
    )
}
