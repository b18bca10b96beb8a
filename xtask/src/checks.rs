//! Repository checks `cargo xtask test` runs before it builds anything: no merge-conflict
//! markers in tracked files, no Markdown link to a file that does not exist, no import cycle
//! among any crate's modules, no module of a layered crate using a later layer, no production
//! function over [`MAX_FUNCTION_LINES`] lines, no unused dependency.
//!
//! **Module graph.** A node is a source file (`modules = files`): an inline module folds into
//! the file that holds it, and `#[cfg(test)]` items (unit-test modules) are left out, since the
//! check is about the production layering. An edge `a → b` means code in `a` names a path
//! into `b`: `crate::…`, `super::…`, `self::…`, or a path that starts with a child module's name,
//! in a `use` or anywhere in the code. A path resolves to the longest module prefix it names;
//! a name that module only imports (`use x::Name`, `pub use` re-exports) resolves on to where
//! it was imported from. Declaring `mod b;` is containment, not an edge, and so is a module's
//! root file (`lib.rs`, `mod.rs`) using what it contains: a folder is one unit to the rest of
//! the crate, its root may wire and re-export its files, and those files may use its shared
//! items (`super::…`). Cycles are the strongly connected components of more than one file
//! (Tarjan).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::cmd::root;

/// Crates whose module cycles are known and not yet removed: the check reports their cycles
/// without failing. Empty since the collector's layered restructure (issue 13); nothing may be
/// added to it.
pub const CYCLES_PENDING: &[&str] = &[];

/// Crates built in layers: the top-level modules of the library, lowest layer first. Its
/// `lib.rs` declares exactly these modules in this order, and a file may use modules of its own
/// layer and of earlier ones, never of a later one (see [`layered_modules`]).
pub const LAYERED: &[(&str, &[&str])] = &[(
    "etcd-monitor",
    &[
        "model", "store", "sources", "analysis", "ops", "outputs", "app",
    ],
)];

/// Every check; fails with all that was found.
pub fn run() -> anyhow::Result<()> {
    let root = root();
    let mut failures = Vec::new();
    if let Err(e) = conflict_markers(&root) {
        failures.push(format!("{e:#}"));
    }
    if let Err(e) = dead_links(&root) {
        failures.push(format!("{e:#}"));
    }
    if let Err(e) = acyclic_modules(&root) {
        failures.push(format!("{e:#}"));
    }
    if let Err(e) = layered_modules(&root) {
        failures.push(format!("{e:#}"));
    }
    if let Err(e) = long_functions(&root) {
        failures.push(format!("{e:#}"));
    }
    if let Err(e) = unused_dependencies(&root) {
        failures.push(format!("{e:#}"));
    }
    if failures.is_empty() {
        eprintln!(
            "xtask: checks: no conflict markers, no dead links, no module cycles, layers point one way, no long functions, no unused dependencies"
        );
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

// ---------------------------------------------------------------------------------------------
// Conflict markers

/// Fails naming `file:line` of every conflict marker in a tracked text file.
pub fn conflict_markers(root: &Path) -> anyhow::Result<()> {
    let mut found = Vec::new();
    for name in tracked(root)? {
        if name.ends_with(".lock") {
            continue;
        }
        // A tracked file missing from the work tree (deleted, not yet committed) has no markers.
        let Ok(bytes) = std::fs::read(root.join(&name)) else {
            continue;
        };
        found.extend(
            markers_in(&bytes)
                .into_iter()
                .map(|line| format!("{name}:{line}")),
        );
    }
    if found.is_empty() {
        Ok(())
    } else {
        bail!(
            "merge-conflict markers in tracked files (resolve them, keeping what both sides need):\n  {}",
            found.join("\n  ")
        )
    }
}

/// Fails naming `file:line: target` of every relative Markdown link (`[text](path)`) in a
/// tracked `.md` file whose target does not exist.
pub fn dead_links(root: &Path) -> anyhow::Result<()> {
    let mut found = Vec::new();
    for name in tracked(root)?.iter().filter(|n| n.ends_with(".md")) {
        let Ok(text) = std::fs::read_to_string(root.join(name)) else {
            continue;
        };
        let dir = root.join(name);
        let dir = dir.parent().unwrap_or(root);
        for (line, target) in link_targets(&text) {
            if !dir.join(&target).exists() {
                found.push(format!("{name}:{line}: {target}"));
            }
        }
    }
    if found.is_empty() {
        Ok(())
    } else {
        bail!(
            "links to files that do not exist:\n  {}",
            found.join("\n  ")
        )
    }
}

/// (1-based line, path) of the relative link targets in Markdown text, anchors dropped.
fn link_targets(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else {
                break;
            };
            let target = after[..end].split('#').next().unwrap_or("").trim();
            let external = target.contains("://") || target.starts_with("mailto:");
            if !target.is_empty() && !external && !target.contains(' ') {
                out.push((i + 1, target.to_owned()));
            }
            rest = &after[end..];
        }
    }
    out
}

/// Tracked files, relative to `root`.
fn tracked(root: &Path) -> anyhow::Result<Vec<String>> {
    let listing = Command::new("git")
        .current_dir(root)
        .args(["ls-files", "-z"])
        .output()
        .context("running git ls-files")?;
    if !listing.status.success() {
        bail!(
            "git ls-files failed: {}",
            String::from_utf8_lossy(&listing.stderr)
        );
    }
    Ok(listing
        .stdout
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect())
}

/// 1-based line numbers of the conflict markers in a file; none for a binary file (a NUL byte).
fn markers_in(bytes: &[u8]) -> Vec<usize> {
    if bytes.contains(&0) {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(bytes);
    let separator = "=".repeat(7);
    let ours = format!("{} ", "<".repeat(7));
    let theirs = format!("{} ", ">".repeat(7));
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.strip_suffix('\r').unwrap_or(l);
            l.starts_with(&ours) || l.starts_with(&theirs) || l == separator
        })
        .map(|(i, _)| i + 1)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Workspace crates

/// A workspace member: its package name and directory.
struct Crate {
    name: String,
    dir: PathBuf,
}

/// The `[workspace] members` of the root manifest, with their package names.
fn workspace_crates(root: &Path) -> anyhow::Result<Vec<Crate>> {
    let manifest = read(&root.join("Cargo.toml"))?;
    let start = manifest
        .find("members = [")
        .context("no `members = [` in the root Cargo.toml")?;
    let list = &manifest[start + "members = [".len()..];
    let list = &list[..list.find(']').context("unterminated members list")?];
    let mut crates = Vec::new();
    for dir in list
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .filter(|s| !s.is_empty())
    {
        let dir = root.join(dir);
        let toml = read(&dir.join("Cargo.toml"))?;
        let name = toml
            .lines()
            .find_map(|l| {
                let l = l.trim();
                let v = l.strip_prefix("name")?.trim_start().strip_prefix('=')?;
                Some(v.trim().trim_matches('"').to_owned())
            })
            .with_context(|| format!("no package name in {}/Cargo.toml", dir.display()))?;
        crates.push(Crate { name, dir });
    }
    Ok(crates)
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Acyclic modules

/// Fails printing every cycle among the modules of a crate not in [`CYCLES_PENDING`]; prints
/// (without failing) those of the crates in it.
pub fn acyclic_modules(root: &Path) -> anyhow::Result<()> {
    let mut failing = Vec::new();
    for krate in workspace_crates(root)? {
        for entry in ["src/lib.rs", "src/main.rs"] {
            let entry = krate.dir.join(entry);
            if !entry.exists() {
                continue;
            }
            let graph = ModuleGraph::load(&entry)?;
            let cycles = graph.cycles();
            if cycles.is_empty() {
                continue;
            }
            let label = entry
                .strip_prefix(root)
                .unwrap_or(&entry)
                .display()
                .to_string();
            let report = cycles
                .iter()
                .map(|c| {
                    let show = |ms: &[Vec<String>]| -> Vec<String> {
                        ms.iter().map(|m| graph.display(root, m)).collect()
                    };
                    let mut text = format!(
                        "  a cycle of {} files: {}",
                        c.members.len(),
                        show(&c.path).join(" → ")
                    );
                    if c.members.len() + 1 > c.path.len() {
                        text.push_str(&format!(
                            "\n    all files in it: {}",
                            show(&c.members).join(", ")
                        ));
                    }
                    text
                })
                .collect::<Vec<_>>()
                .join("\n");
            if CYCLES_PENDING.contains(&krate.name.as_str()) {
                eprintln!(
                    "xtask: checks: {} ({label}) has module cycles, allowed until the restructure (CYCLES_PENDING):\n{report}",
                    krate.name
                );
            } else {
                failing.push(format!("{} ({label}):\n{report}", krate.name));
            }
        }
    }
    if failing.is_empty() {
        Ok(())
    } else {
        bail!(
            "import cycles among modules (make the dependency point one way):\n{}",
            failing.join("\n")
        )
    }
}

/// Fails naming every file of a [`LAYERED`] crate that uses a module of a later layer, and
/// every `lib.rs` whose module list is not the layers in order.
pub fn layered_modules(root: &Path) -> anyhow::Result<()> {
    let mut failing = Vec::new();
    for krate in workspace_crates(root)? {
        let Some((_, layers)) = LAYERED.iter().find(|(name, _)| *name == krate.name) else {
            continue;
        };
        let entry = krate.dir.join("src/lib.rs");
        let graph = ModuleGraph::load(&entry)?;
        let declared = file_facts(&read(&entry)?).child_files;
        failing.extend(
            layer_violations(&graph, &declared, layers)
                .into_iter()
                .map(|v| format!("  {}: {v}", krate.name)),
        );
    }
    if failing.is_empty() {
        Ok(())
    } else {
        bail!(
            "modules using a later layer (move the shared part down, or hand it over through a trait the later layer implements):\n{}",
            failing.join("\n")
        )
    }
}

/// What breaks the layering: `declared` (the crate root's non-test `mod`s, in order) differing
/// from `layers`, and each edge from a file in one layer to a file in a later one.
fn layer_violations(graph: &ModuleGraph, declared: &[String], layers: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    if declared
        .iter()
        .map(String::as_str)
        .ne(layers.iter().copied())
    {
        out.push(format!(
            "lib.rs declares [{}]; the layers in order are [{}]",
            declared.join(", "),
            layers.join(", ")
        ));
    }
    let rank = |m: &[String]| {
        m.first()
            .and_then(|top| layers.iter().position(|l| l == top))
    };
    for (from, tos) in &graph.edges {
        let Some(low) = rank(from) else { continue };
        for to in tos {
            if let Some(high) = rank(to)
                && high > low
            {
                out.push(format!(
                    "crate::{} (layer {}) uses crate::{} (layer {}, later)",
                    from.join("::"),
                    layers[low],
                    to.join("::"),
                    layers[high]
                ));
            }
        }
    }
    out
}

/// Token of stripped Rust source: an identifier or keyword, `::`, or one punctuation character.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Path,
    Punct(char),
}

/// Tokens of `src` without comments, string, char and number literals or lifetimes.
fn tokenize(src: &str) -> Vec<Tok> {
    tokenize_at(src).into_iter().map(|(t, _)| t).collect()
}

/// [`tokenize`], each token with the index (in chars) where it starts in `src`.
fn tokenize_at(src: &str) -> Vec<(Tok, usize)> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            i = skip_block_comment(&chars, i);
        } else if c == '"' {
            i = skip_string(&chars, i + 1);
        } else if (c == 'r' || c == 'b' || c == 'c')
            && let Some(end) = raw_or_byte_string(&chars, i)
        {
            i = end;
        } else if c == '\'' {
            i = skip_char_or_lifetime(&chars, i);
        } else if c.is_ascii_digit() {
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                // `0..n` is a range, not a float.
                if chars[i] == '.' && at(i + 1) == '.' {
                    break;
                }
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push((
                Tok::Ident(word.strip_prefix("r#").unwrap_or(&word).to_owned()),
                start,
            ));
        } else if c == ':' && at(i + 1) == ':' {
            out.push((Tok::Path, i));
            i += 2;
        } else {
            out.push((Tok::Punct(c), i));
            i += 1;
        }
    }
    out
}

/// Index after the (nested) block comment starting at `i`.
fn skip_block_comment(chars: &[char], mut i: usize) -> usize {
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut depth = 0;
    while i < chars.len() {
        if chars[i] == '/' && at(i + 1) == '*' {
            depth += 1;
            i += 2;
        } else if chars[i] == '*' && at(i + 1) == '/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                break;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// Index after the char literal ('a', '\n', '\u{1F600}') or lifetime ('a) starting at `i`.
fn skip_char_or_lifetime(chars: &[char], mut i: usize) -> usize {
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    if at(i + 1) == '\\' {
        i += 2;
        while i < chars.len() && chars[i] != '\'' {
            i += 1;
        }
        i + 1
    } else if at(i + 2) == '\'' {
        i + 3
    } else {
        i += 1;
        while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        i
    }
}

/// Index after the closing quote of a string whose body starts at `i`.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The end of a `b"…"`, `c"…"`, `b'…'`, `r"…"`, `r#"…"#` or `br#"…"#` literal at `i`, if one
/// starts there.
fn raw_or_byte_string(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if chars[j] == 'b' || chars[j] == 'c' {
        j += 1;
        match chars.get(j) {
            Some('"') => return Some(skip_string(chars, j + 1)),
            Some('\'') if chars[i] == 'b' => {
                let mut k = j + 1;
                if chars.get(k) == Some(&'\\') {
                    k += 1;
                }
                k += 1;
                while k < chars.len() && chars[k] != '\'' {
                    k += 1;
                }
                return Some(k + 1);
            }
            Some('r') => {}
            _ => return None,
        }
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && (0..hashes).all(|h| chars.get(j + 1 + h) == Some(&'#')) {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(j)
}

/// What one file says about modules: children it declares, the paths it names, its imports.
#[derive(Default, Debug)]
struct FileFacts {
    /// `mod name;` declared outside test code.
    child_files: Vec<String>,
    /// Paths named in the file, each from where it stands (`crate`, `super`, `self` or a first
    /// segment still to be resolved), with the module nesting (inline modules) at that point.
    paths: Vec<(Vec<String>, Vec<String>)>,
    /// `use` bindings: (inline nesting, bound name, full path as written).
    imports: Vec<(Vec<String>, String, Vec<String>)>,
    /// Inline modules (`mod name { … }`), relative to the file's module.
    inline: Vec<Vec<String>>,
}

fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

/// Index after the item starting at `i` (ends at a `;` or at its outermost closing brace).
fn skip_item(toks: &[Tok], mut i: usize) -> usize {
    let mut depth = 0i32;
    while i < toks.len() {
        match toks[i] {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth <= 0 {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth <= 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Index after the attribute `#[…]` or `#![…]` at `i`, and whether it is `cfg(test)`.
fn attribute(toks: &[Tok], i: usize) -> Option<(usize, bool)> {
    if toks.get(i) != Some(&Tok::Punct('#')) {
        return None;
    }
    let mut j = i + 1;
    if toks.get(j) == Some(&Tok::Punct('!')) {
        j += 1;
    }
    if toks.get(j) != Some(&Tok::Punct('[')) {
        return None;
    }
    let mut depth = 0;
    let mut end = j;
    while end < toks.len() {
        match toks[end] {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => depth -= 1,
            _ => {}
        }
        end += 1;
        if depth == 0 {
            break;
        }
    }
    let body = &toks[j..end];
    let is_test = ident(body.get(1)) == Some("cfg")
        && body.iter().any(|t| *t == Tok::Ident("test".into()))
        && !body.iter().any(|t| *t == Tok::Ident("not".into()));
    Some((end, is_test))
}

/// Expands the use tree at `toks[i..]` (after `use`) into (bound name, path) pairs; a glob
/// binds `*`.
fn use_tree(toks: &[Tok], i: &mut usize, prefix: &[String], out: &mut Vec<(String, Vec<String>)>) {
    let mut path = prefix.to_vec();
    if toks.get(*i) == Some(&Tok::Path) {
        *i += 1;
    }
    loop {
        match toks.get(*i) {
            Some(Tok::Ident(name)) if name != "as" => {
                path.push(name.clone());
                *i += 1;
                if toks.get(*i) == Some(&Tok::Path) {
                    *i += 1;
                    continue;
                }
                let mut bound = path.last().cloned().unwrap_or_default();
                if ident(toks.get(*i)) == Some("as") {
                    bound = ident(toks.get(*i + 1)).unwrap_or("_").to_owned();
                    *i += 2;
                }
                if bound == "self" {
                    path.pop();
                    bound = path.last().cloned().unwrap_or_default();
                }
                out.push((bound, path));
                return;
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push(("*".into(), path));
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                while *i < toks.len() && toks[*i] != Tok::Punct('}') {
                    use_tree(toks, i, &path, out);
                    if toks.get(*i) == Some(&Tok::Punct(',')) {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            _ => {
                *i += 1;
                return;
            }
        }
    }
}

/// Reads what a file says about modules, leaving out `#[cfg(test)]` items.
fn file_facts(src: &str) -> FileFacts {
    let toks = tokenize(src);
    let mut facts = FileFacts::default();
    // Inline module nesting: (name, brace depth at which it closes).
    let mut nest: Vec<(String, i32)> = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    let names = nest_names;
    while i < toks.len() {
        if let Some((end, is_test)) = attribute(&toks, i) {
            i = end;
            if is_test {
                while let Some((end, _)) = attribute(&toks, i) {
                    i = end;
                }
                i = skip_item(&toks, i);
            }
            continue;
        }
        match &toks[i] {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if nest.last().is_some_and(|(_, d)| *d == depth) {
                    nest.pop();
                }
                depth -= 1;
                i += 1;
            }
            Tok::Ident(kw) if kw == "mod" => {
                i = module_decl(&toks, i, &mut nest, &mut depth, &mut facts);
            }
            Tok::Ident(kw) if kw == "use" => {
                let mut j = i + 1;
                let mut bound = Vec::new();
                use_tree(&toks, &mut j, &[], &mut bound);
                let here = names(&nest);
                for (name, path) in bound {
                    facts.paths.push((here.clone(), path.clone()));
                    facts.imports.push((here.clone(), name, path));
                }
                i = j;
            }
            Tok::Ident(first) if toks.get(i + 1) == Some(&Tok::Path) => {
                let after_path = i > 0 && toks[i - 1] == Tok::Path;
                if after_path {
                    i += 1;
                } else {
                    let (path, end) = path_at(&toks, i, first);
                    facts.paths.push((names(&nest), path));
                    i = end;
                }
            }
            _ => i += 1,
        }
    }
    facts
}

/// The names of the inline modules open at a point (outermost first).
fn nest_names(nest: &[(String, i32)]) -> Vec<String> {
    nest.iter().map(|(n, _)| n.clone()).collect()
}

/// At `mod`: records `mod name;` (outside inline modules) as a child file, or opens
/// `mod name { … }` (which closes at the brace depth pushed on `nest`); returns the index
/// after what it read.
fn module_decl(
    toks: &[Tok],
    i: usize,
    nest: &mut Vec<(String, i32)>,
    depth: &mut i32,
    facts: &mut FileFacts,
) -> usize {
    let Some(name) = ident(toks.get(i + 1)).map(str::to_owned) else {
        return i + 1;
    };
    match toks.get(i + 2) {
        Some(Tok::Punct(';')) if nest.is_empty() => facts.child_files.push(name),
        Some(Tok::Punct('{')) => {
            let mut inner = nest_names(nest);
            inner.push(name.clone());
            facts.inline.push(inner);
            *depth += 1;
            nest.push((name, *depth));
            return i + 3;
        }
        _ => {}
    }
    i + 2
}

/// The path `first::a::b` starting at `i`, and the index after it.
fn path_at(toks: &[Tok], i: usize, first: &str) -> (Vec<String>, usize) {
    let mut path = vec![first.to_owned()];
    let mut j = i + 1;
    while toks.get(j) == Some(&Tok::Path) {
        match ident(toks.get(j + 1)) {
            Some(seg) => path.push(seg.to_owned()),
            None => break,
        }
        j += 2;
    }
    (path, j)
}

/// A crate's (lib or bin) module tree and the dependencies between its files.
struct ModuleGraph {
    /// Module path (`[]` is the crate root) → file.
    files: BTreeMap<Vec<String>, PathBuf>,
    /// Inline module path → the module path of the file that holds it.
    inline: HashMap<Vec<String>, Vec<String>>,
    /// Module path → imported name → absolute path of what it names.
    imports: HashMap<Vec<String>, HashMap<String, Vec<String>>>,
    /// Edges between file modules.
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

impl ModuleGraph {
    /// Reads the module tree from its root file (`lib.rs` or `main.rs`).
    fn load(entry: &Path) -> anyhow::Result<Self> {
        let mut sources = Vec::new();
        let mut stack = vec![(Vec::<String>::new(), entry.to_path_buf())];
        while let Some((module, file)) = stack.pop() {
            let facts = file_facts(&read(&file)?);
            let is_dir_owner = matches!(
                file.file_name().and_then(|n| n.to_str()),
                Some("lib.rs" | "main.rs" | "mod.rs")
            );
            let parent = file.parent().unwrap_or(Path::new("."));
            let dir = if is_dir_owner {
                parent.to_path_buf()
            } else {
                parent.join(file.file_stem().unwrap_or_default())
            };
            for child in &facts.child_files {
                let flat = dir.join(format!("{child}.rs"));
                let nested = dir.join(child).join("mod.rs");
                let path = if flat.exists() { flat } else { nested };
                if !path.exists() {
                    bail!("{}: `mod {child};` has no file", file.display());
                }
                let mut m = module.clone();
                m.push(child.clone());
                stack.push((m, path));
            }
            sources.push((module, file, facts));
        }
        let mut graph = ModuleGraph {
            files: BTreeMap::new(),
            inline: HashMap::new(),
            imports: HashMap::new(),
            edges: BTreeMap::new(),
        };
        for (module, file, facts) in &sources {
            graph.files.insert(module.clone(), file.clone());
            for inner in &facts.inline {
                graph.inline.insert(concat(module, inner), module.clone());
            }
        }
        // Imports first (with paths made absolute), so that paths can be followed through them.
        for (module, _, facts) in &sources {
            for (nest, name, path) in &facts.imports {
                let here = concat(module, nest);
                if let Some(abs) = graph.absolute(&here, path) {
                    graph
                        .imports
                        .entry(here)
                        .or_default()
                        .insert(name.clone(), abs);
                }
            }
        }
        for (module, _, facts) in &sources {
            let from = module.clone();
            graph.edges.entry(from.clone()).or_default();
            for (nest, path) in &facts.paths {
                let here = concat(module, nest);
                let Some(abs) = graph.absolute(&here, path) else {
                    continue;
                };
                // A module's root file using what it contains is containment, like its
                // `mod` declarations; only the other direction is a dependency.
                if let Some(to) = graph.resolve(&abs, 0)
                    && !to.starts_with(&from)
                {
                    graph.edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
        Ok(graph)
    }

    /// Whether `m` is a module of this crate (a file or an inline module).
    fn is_module(&self, m: &[String]) -> bool {
        self.files.contains_key(m) || self.inline.contains_key(m)
    }

    /// `path` as written in module `here`, made absolute; `None` when it leaves the crate.
    fn absolute(&self, here: &[String], path: &[String]) -> Option<Vec<String>> {
        let first = path.first()?;
        match first.as_str() {
            "crate" | "$crate" => Some(path[1..].to_vec()),
            "self" => Some(concat(here, &path[1..])),
            "super" => {
                let mut base = here.to_vec();
                let mut rest = path;
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                Some(concat(&base, rest))
            }
            _ => {
                // A child module of `here`, or a name `here` imports (followed later).
                let child = concat(here, &path[..1]);
                if self.is_module(&child) {
                    Some(concat(here, path))
                } else {
                    None
                }
            }
        }
    }

    /// The file module an absolute path lands in, following imports of the module it names.
    fn resolve(&self, abs: &[String], hops: usize) -> Option<Vec<String>> {
        let mut longest = 0;
        for n in 0..=abs.len() {
            if self.is_module(&abs[..n]) {
                longest = n;
            }
        }
        let module = &abs[..longest];
        if hops < 8
            && let Some(name) = abs.get(longest)
            && let Some(target) = self.imports.get(module).and_then(|m| m.get(name))
        {
            let mut next = target.clone();
            next.extend_from_slice(&abs[longest + 1..]);
            if next != abs
                && let Some(found) = self.resolve(&next, hops + 1)
            {
                return Some(found);
            }
        }
        Some(self.file_of(module))
    }

    /// The file module holding module `m` (itself, or the file of an inline module).
    fn file_of(&self, m: &[String]) -> Vec<String> {
        self.inline.get(m).cloned().unwrap_or_else(|| m.to_vec())
    }

    fn display(&self, root: &Path, m: &[String]) -> String {
        self.files
            .get(m)
            .map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string())
            .unwrap_or_else(|| format!("crate::{}", m.join("::")))
    }

    /// Each strongly connected component of more than one file: one cycle through it (first
    /// node repeated at the end) and all its files.
    fn cycles(&self) -> Vec<Cycle> {
        let nodes: Vec<&Vec<String>> = self.edges.keys().collect();
        let index: HashMap<&Vec<String>, usize> =
            nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let adj: Vec<Vec<usize>> = nodes
            .iter()
            .map(|n| {
                self.edges[*n]
                    .iter()
                    .filter_map(|t| index.get(t).copied())
                    .collect()
            })
            .collect();
        tarjan(&adj)
            .into_iter()
            .filter(|scc| scc.len() > 1)
            .map(|scc| Cycle {
                path: cycle_in(&adj, &scc)
                    .into_iter()
                    .map(|i| nodes[i].clone())
                    .collect(),
                members: scc.iter().map(|i| nodes[*i].clone()).collect(),
            })
            .collect()
    }
}

/// A strongly connected component of the module graph.
struct Cycle {
    /// One cycle through the component's first file, that file repeated at the end.
    path: Vec<Vec<String>>,
    /// Every file of the component.
    members: Vec<Vec<String>>,
}

fn concat(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().chain(b).cloned().collect()
}

/// Strongly connected components (Tarjan), iteratively.
fn tarjan(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = adj.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        // (node, next edge to look at)
        let mut work = vec![(start, 0usize)];
        index[start] = next;
        low[start] = next;
        next += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(&mut (v, ref mut e)) = work.last_mut() {
            if let Some(&w) = adj[v].get(*e) {
                *e += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut scc = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                scc.sort_unstable();
                out.push(scc);
            }
        }
    }
    out
}

/// The shortest cycle (BFS inside the component) from the component's first node back to
/// itself, that node repeated at the end.
fn cycle_in(adj: &[Vec<usize>], scc: &[usize]) -> Vec<usize> {
    let members: BTreeSet<usize> = scc.iter().copied().collect();
    let start = scc[0];
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &adj[v] {
            if !members.contains(&w) {
                continue;
            }
            if w == start {
                let mut back = vec![start];
                let mut at = v;
                while at != start {
                    back.push(at);
                    at = prev[&at];
                }
                back.push(start);
                back.reverse();
                return back;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    scc.to_vec()
}

// ---------------------------------------------------------------------------------------------
// Long functions

/// The most lines a production function may span, from the line of its `fn` keyword to its
/// closing brace (issue 13: split longer ones into named steps).
pub const MAX_FUNCTION_LINES: usize = 80;

/// Production functions over [`MAX_FUNCTION_LINES`] whose split is still pending, as
/// (file relative to the workspace root, function name); an entry covers every function of
/// that name in the file. [`long_functions`] reports them without failing, and fails when an
/// entry is no longer long, so the list only shrinks: remove an entry in the commit that
/// splits its function; never add one.
pub const LONG_FUNCTIONS_PENDING: &[(&str, &str)] = &[];

/// Crates that are test code as a whole (the end-to-end harness), left out of
/// [`long_functions`] like integration tests.
const TEST_SUPPORT_CRATES: &[&str] = &["etcd-monitor-tests"];

/// A function with a body: its name, the line of its `fn` keyword (1-based) and how many lines
/// it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FnSpan {
    name: String,
    line: usize,
    lines: usize,
}

/// Fails naming `file:line`, name and length of every production function over
/// [`MAX_FUNCTION_LINES`] not in [`LONG_FUNCTIONS_PENDING`], and every entry of that list that
/// names no long function any more. Production code is what the crates' module trees reach
/// outside `#[cfg(test)]` items: integration tests, examples and benches are not in them.
pub fn long_functions(root: &Path) -> anyhow::Result<()> {
    long_functions_except(root, LONG_FUNCTIONS_PENDING)
}

/// [`long_functions`] with the allowlist given.
fn long_functions_except(root: &Path, allowed: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut long = Vec::new();
    for file in production_files(root)? {
        let rel = file.strip_prefix(root).unwrap_or(&file);
        let rel = rel.to_string_lossy().replace('\\', "/");
        for f in functions(&read(&file)?) {
            if f.lines > MAX_FUNCTION_LINES {
                long.push((rel.clone(), f));
            }
        }
    }
    let (problems, pending) = judge_long_functions(&long, allowed);
    if !pending.is_empty() {
        eprintln!(
            "xtask: checks: {} long function(s) allowed until they are split (LONG_FUNCTIONS_PENDING):\n{}",
            pending.len(),
            pending.join("\n")
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("\n"))
    }
}

/// Splits the long functions into failures and allowed (pending) ones, and adds a failure for
/// every pending entry that matches no long function.
fn judge_long_functions(
    long: &[(String, FnSpan)],
    pending: &[(&str, &str)],
) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut allowed = Vec::new();
    for (file, f) in long {
        let line = format!(
            "{file}:{} fn {} is {} lines (at most {MAX_FUNCTION_LINES})",
            f.line, f.name, f.lines
        );
        if pending.contains(&(file.as_str(), f.name.as_str())) {
            allowed.push(format!("  {line}"));
        } else {
            problems.push(format!("{line}: split it into named steps"));
        }
    }
    for (file, name) in pending {
        if !long.iter().any(|(f, span)| f == file && span.name == *name) {
            problems.push(format!(
                "{file}: fn {name} is in LONG_FUNCTIONS_PENDING but no longer over \
                 {MAX_FUNCTION_LINES} lines (or gone): remove the entry"
            ));
        }
    }
    (problems, allowed)
}

/// The source files of every workspace crate's library, binaries and build script, as their
/// module trees reach them (test-only modules left out).
fn production_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = BTreeSet::new();
    for krate in workspace_crates(root)? {
        if TEST_SUPPORT_CRATES.contains(&krate.name.as_str()) {
            continue;
        }
        let mut entries = vec![krate.dir.join("src/lib.rs"), krate.dir.join("src/main.rs")];
        if let Ok(bins) = std::fs::read_dir(krate.dir.join("src/bin")) {
            entries.extend(bins.filter_map(Result::ok).map(|e| e.path()));
        }
        let build = krate.dir.join("build.rs");
        if build.exists() {
            files.insert(build);
        }
        for entry in entries.into_iter().filter(|e| e.is_file()) {
            files.extend(ModuleGraph::load(&entry)?.files.into_values());
        }
    }
    Ok(files.into_iter().collect())
}

/// Every function with a body in `src`, outside `#[cfg(test)]` items; a function nested in
/// another is listed on its own too.
fn functions(src: &str) -> Vec<FnSpan> {
    let (toks, starts): (Vec<Tok>, Vec<usize>) = tokenize_at(src).into_iter().unzip();
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(
            src.chars()
                .enumerate()
                .filter(|(_, c)| *c == '\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    let line_of = |tok: usize| line_starts.partition_point(|&s| s <= starts[tok]);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if let Some(end) = skip_test_item(&toks, i) {
            i = end;
            continue;
        }
        if toks[i] == Tok::Ident("fn".into())
            && let Some(name) = ident(toks.get(i + 1))
            && let Some(close) = fn_body_end(&toks, i + 2)
        {
            out.push(FnSpan {
                name: name.to_owned(),
                line: line_of(i),
                lines: line_of(close) - line_of(i) + 1,
            });
        }
        i += 1;
    }
    out
}

/// At an attribute: the index after it, or after the whole item when it is `#[cfg(test)]`.
fn skip_test_item(toks: &[Tok], i: usize) -> Option<usize> {
    let (mut end, is_test) = attribute(toks, i)?;
    if is_test {
        while let Some((next, _)) = attribute(toks, end) {
            end = next;
        }
        end = skip_item(toks, end);
    }
    Some(end)
}

/// From the token after a function's name: the index of its body's closing brace, or `None`
/// for a declaration without a body (`fn f();` in a trait or `extern` block).
fn fn_body_end(toks: &[Tok], mut i: usize) -> Option<usize> {
    let mut depth = 0i32;
    while i < toks.len() {
        match toks[i] {
            Tok::Punct('(' | '[') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct(';') if depth == 0 => return None,
            Tok::Punct('{') if depth == 0 => break,
            _ => {}
        }
        i += 1;
    }
    let mut braces = 0i32;
    while i < toks.len() {
        match toks[i] {
            Tok::Punct('{') => braces += 1,
            Tok::Punct('}') => {
                braces -= 1;
                if braces == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Unused dependencies

/// `cargo machete` over the workspace (each crate's own dependencies), plus: every entry of
/// `[workspace.dependencies]` is used by some member.
pub fn unused_dependencies(root: &Path) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    let manifest = read(&root.join("Cargo.toml"))?;
    let members: Vec<String> = workspace_crates(root)?
        .iter()
        .map(|c| read(&c.dir.join("Cargo.toml")))
        .collect::<anyhow::Result<_>>()?;
    for dep in workspace_dependencies(&manifest) {
        let used = members.iter().any(|m| {
            m.lines().any(|l| {
                let l = l.trim_start();
                l.strip_prefix(dep.as_str()).is_some_and(|rest| {
                    rest.trim_start().starts_with('=') || rest.starts_with(".workspace")
                })
            })
        });
        if !used {
            problems.push(format!(
                "[workspace.dependencies] {dep} is used by no crate"
            ));
        }
    }
    // The binary itself, not `cargo machete`: run from `cargo xtask`, `CARGO` is set and
    // cargo-machete would then take its first argument for the subcommand's name.
    match Command::new("cargo-machete")
        .current_dir(root)
        .env_remove("CARGO")
        // `target/` holds copies of crates (build scripts' outputs) that are not ours.
        .args(["--skip-target-dir", "."])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => problems.push(format!(
            "cargo machete found unused dependencies (remove them, or list a false positive under \
             [package.metadata.cargo-machete] ignored):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => problems.push(format!(
            "cargo machete did not run ({e}); `cargo xtask setup` installs it"
        )),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("\n"))
    }
}

/// Names in the root manifest's `[workspace.dependencies]`.
fn workspace_dependencies(manifest: &str) -> Vec<String> {
    let mut in_section = false;
    let mut names = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.dependencies]";
            continue;
        }
        if in_section
            && !line.starts_with('#')
            && let Some((name, _)) = line.split_once('=')
        {
            names.push(name.trim().to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_with(files: &[(&str, &str)]) -> tempfile_dir::Dir {
        let dir = tempfile_dir::Dir::new();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    /// A throwaway directory without the tempfile crate (xtask's default build stays lean).
    mod tempfile_dir {
        use std::path::{Path, PathBuf};

        pub struct Dir(PathBuf);

        impl Dir {
            pub fn new() -> Self {
                static COUNT: std::sync::atomic::AtomicUsize =
                    std::sync::atomic::AtomicUsize::new(0);
                let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path =
                    std::env::temp_dir().join(format!("xtask-checks-{}-{n}", std::process::id()));
                let _ = std::fs::remove_dir_all(&path);
                std::fs::create_dir_all(&path).expect("create a temp dir");
                Dir(path)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn cycles_of(files: &[(&str, &str)]) -> Vec<String> {
        let dir = crate_with(files);
        let graph = ModuleGraph::load(&dir.path().join("src/lib.rs")).expect("load");
        graph
            .cycles()
            .iter()
            .map(|c| {
                c.path
                    .iter()
                    .map(|m| graph.display(dir.path(), m))
                    .collect::<Vec<_>>()
                    .join(" → ")
            })
            .collect()
    }

    /// A one-crate workspace whose `src/lib.rs` is `lib`.
    fn workspace_with(lib: &str) -> tempfile_dir::Dir {
        crate_with(&[
            ("Cargo.toml", "[workspace]\nmembers = [\"a\"]\n"),
            ("a/Cargo.toml", "[package]\nname = \"a\"\n"),
            ("a/src/lib.rs", lib),
            ("a/src/only_tests.rs", &long_fn("in_a_test_file", 100)),
        ])
    }

    /// A function `name` spanning `lines` lines.
    fn long_fn(name: &str, lines: usize) -> String {
        let body = "    let _ = \"}\"; // {\n".repeat(lines - 2);
        format!("pub fn {name}() {{\n{body}}}\n")
    }

    #[test]
    fn a_planted_81_line_function_fails_and_80_lines_pass() {
        let test_only = format!(
            "#[cfg(test)]\nmod only_tests;\n#[cfg(test)]\nmod tests {{\n{}}}\n",
            long_fn("test_helper", 120)
        );
        let ok = workspace_with(&format!("{}{test_only}", long_fn("eighty", 80)));
        long_functions_except(ok.path(), &[]).expect("80 lines and test code pass");
        let planted = workspace_with(&format!("{}{test_only}", long_fn("planted", 81)));
        let err = long_functions_except(planted.path(), &[])
            .expect_err("an 81-line function fails")
            .to_string();
        assert!(
            err.contains("a/src/lib.rs:1 fn planted is 81 lines (at most 80)"),
            "{err}"
        );
        assert!(
            !err.contains("test_helper") && !err.contains("in_a_test_file"),
            "{err}"
        );
        long_functions_except(planted.path(), &[("a/src/lib.rs", "planted")])
            .expect("an allowed long function passes");
    }

    #[test]
    fn an_allowed_function_that_is_no_longer_long_fails() {
        let dir = workspace_with(&long_fn("short_now", 12));
        let err = long_functions_except(dir.path(), &[("a/src/lib.rs", "short_now")])
            .expect_err("a stale entry fails")
            .to_string();
        assert!(
            err.contains("a/src/lib.rs: fn short_now is in LONG_FUNCTIONS_PENDING but no longer"),
            "{err}"
        );
    }

    #[test]
    fn functions_are_measured_from_fn_to_closing_brace() {
        let src = "trait T {\n    fn declared(&self);\n}\n/// Doc.\n#[inline]\npub(crate) async fn f(\n    x: [u8; 2],\n) -> u8 {\n    fn inner() {}\n    x[0]\n}\n";
        let spans = functions(src);
        let got: Vec<(&str, usize, usize)> = spans
            .iter()
            .map(|f| (f.name.as_str(), f.line, f.lines))
            .collect();
        assert_eq!(got, vec![("f", 6, 6), ("inner", 9, 1)]);
    }

    #[test]
    fn a_planted_cycle_is_found_and_printed() {
        let cycles = cycles_of(&[
            ("src/lib.rs", "pub mod a;\npub mod b;\nmod c;\n"),
            ("src/a.rs", "use crate::b::B;\npub struct A;\n"),
            ("src/b.rs", "pub struct B(pub super::c::C);\n"),
            (
                "src/c.rs",
                "pub struct C;\nfn f() { let _ = crate::a::A; }\n",
            ),
        ]);
        assert_eq!(cycles, vec!["src/a.rs → src/b.rs → src/c.rs → src/a.rs"]);
    }

    #[test]
    fn a_use_of_a_later_layer_is_named() {
        let dir = crate_with(&[
            (
                "src/lib.rs",
                "pub mod low;\npub mod high;\n#[cfg(test)]\nmod t;\n",
            ),
            ("src/low/mod.rs", "pub mod a;\n"),
            ("src/low/a.rs", "pub fn f() { crate::high::g(); }\n"),
            ("src/high.rs", "pub fn g() { crate::low::a::f(); }\n"),
        ]);
        let graph = ModuleGraph::load(&dir.path().join("src/lib.rs")).expect("load");
        let declared = vec!["low".to_owned(), "high".to_owned()];
        assert_eq!(
            layer_violations(&graph, &declared, &["low", "high"]),
            vec!["crate::low::a (layer low) uses crate::high (layer high, later)".to_owned()]
        );
        let facts = file_facts("pub mod low;\npub mod high;\n#[cfg(test)]\nmod t;\n");
        assert_eq!(facts.child_files, declared, "test modules are not layers");
        let swapped = layer_violations(&graph, &declared, &["high", "low"]);
        assert_eq!(swapped.len(), 2, "{swapped:?}");
        assert!(swapped[0].starts_with("lib.rs declares [low, high]"));
    }

    #[test]
    fn one_way_dependencies_are_not_a_cycle() {
        let cycles = cycles_of(&[
            ("src/lib.rs", "pub mod a;\npub mod b;\npub use a::A;\n"),
            (
                "src/a.rs",
                "use crate::b::{self, B};\npub struct A(b::B);\n",
            ),
            // Comments, strings and test code do not count.
            (
                "src/b.rs",
                "// crate::a::A\npub struct B;\nconst S: &str = \"crate::a::A\";\n\
                 #[cfg(test)]\nmod tests { use crate::a::A; }\n",
            ),
        ]);
        assert!(cycles.is_empty(), "{cycles:?}");
    }

    #[test]
    fn paths_after_an_attribute_count() {
        let cycles = cycles_of(&[
            ("src/lib.rs", "pub mod a;\npub mod b;\n"),
            ("src/a.rs", "#[derive(Debug)]\npub struct A(crate::b::B);\n"),
            (
                "src/b.rs",
                "#[derive(Debug)]\npub struct B { a: Option<Box<crate::a::A>> }\n",
            ),
        ]);
        assert_eq!(cycles, vec!["src/a.rs → src/b.rs → src/a.rs"]);
    }

    #[test]
    fn a_re_export_resolves_to_the_defining_file() {
        // `b` names `crate::A`, which lib.rs re-exports from `a`: the edge is b → a, and a → b
        // makes the cycle; lib.rs itself is not part of it.
        let cycles = cycles_of(&[
            ("src/lib.rs", "pub mod a;\npub mod b;\npub use a::A;\n"),
            ("src/a.rs", "pub struct A(crate::b::B);\n"),
            ("src/b.rs", "pub struct B;\nfn f(_: crate::A) {}\n"),
        ]);
        assert_eq!(cycles, vec!["src/a.rs → src/b.rs → src/a.rs"]);
    }

    #[test]
    fn nested_modules_super_and_child_paths() {
        // mod.rs → y is containment; y → x → mod.rs is not a cycle either.
        let cycles = cycles_of(&[
            ("src/lib.rs", "pub mod outer;\n"),
            (
                "src/outer/mod.rs",
                "pub mod x;\npub mod y;\npub fn f() { y::g(); }\n",
            ),
            ("src/outer/x.rs", "pub fn h() { super::f(); }\n"),
            (
                "src/outer/y.rs",
                "use super::x::h;\npub fn g() { h(); }\nfn k() { super::f() }\n",
            ),
        ]);
        assert!(cycles.is_empty(), "{cycles:?}");
        // Siblings, one through an inline module's `super::super`.
        let cycles = cycles_of(&[
            ("src/lib.rs", "pub mod outer;\n"),
            ("src/outer/mod.rs", "pub mod x;\npub mod y;\n"),
            ("src/outer/x.rs", "pub fn h() { super::y::g(); }\n"),
            (
                "src/outer/y.rs",
                "pub fn g() { self::inner::k(); }\nmod inner { pub fn k() { super::super::x::h() } }\n",
            ),
        ]);
        assert_eq!(
            cycles,
            vec!["src/outer/x.rs → src/outer/y.rs → src/outer/x.rs"]
        );
    }

    #[test]
    fn conflict_markers_are_found_by_line() {
        let text = format!(
            "a\n{} HEAD\nours\n{}\ntheirs\n{} branch\nb\n== not one\n",
            "<".repeat(7),
            "=".repeat(7),
            ">".repeat(7)
        );
        assert_eq!(markers_in(text.as_bytes()), vec![2, 4, 6]);
        assert!(markers_in(b"clean\n=====\n").is_empty());
        let mut binary = text.into_bytes();
        binary.push(0);
        assert!(markers_in(&binary).is_empty());
    }

    #[test]
    fn markdown_link_targets() {
        let text = "See [a](docs/a.md#x) and [b](https://e.invalid/b.md), [c](#local).\n[d](../d.txt) [e](mailto:x@y)";
        assert_eq!(
            link_targets(text),
            vec![(1, "docs/a.md".to_owned()), (2, "../d.txt".to_owned())]
        );
    }

    #[test]
    fn workspace_dependency_names() {
        let manifest = "[workspace]\nmembers = []\n[workspace.dependencies]\n# c\nfoo = \"1\"\nbar-baz = { version = \"2\" }\n\n[profile.release]\nx = 1\n";
        assert_eq!(workspace_dependencies(manifest), vec!["foo", "bar-baz"]);
    }

    #[test]
    fn tokenizer_skips_literals_and_lifetimes() {
        let toks =
            tokenize("fn f<'a>(x: &'a str) -> char { let _ = r#\"crate::x\"#; 'y' } // crate::z");
        assert!(!toks.contains(&Tok::Ident("crate".into())), "{toks:?}");
        assert!(toks.contains(&Tok::Ident("str".into())));
    }
}
/// The module graph as text, for notes: `cargo test -p xtask --bins print_module_graph --
/// --ignored --nocapture` (set `ROOT` to measure another checkout).
#[cfg(test)]
mod graph_text {
    use super::*;

    #[test]
    #[ignore = "prints the module graph; run by hand"]
    fn print_module_graph() {
        let root = std::env::var_os("ROOT").map_or_else(root, PathBuf::from);
        for krate in workspace_crates(&root).expect("workspace members") {
            for entry in ["src/lib.rs", "src/main.rs"] {
                let entry = krate.dir.join(entry);
                if !entry.exists() {
                    continue;
                }
                let g = ModuleGraph::load(&entry).expect("module tree");
                let edges: usize = g.edges.values().map(BTreeSet::len).sum();
                let show = |ms: &[Vec<String>]| -> Vec<String> {
                    ms.iter().map(|m| g.display(&root, m)).collect()
                };
                println!(
                    "== {} ({}): {} files, {edges} edges",
                    krate.name,
                    g.display(&root, &[]),
                    g.edges.len()
                );
                for c in g.cycles() {
                    println!(
                        "  cycle of {}: {}",
                        c.members.len(),
                        show(&c.path).join(" → ")
                    );
                    println!("    files: {}", show(&c.members).join(", "));
                }
                for (from, tos) in &g.edges {
                    let tos: Vec<Vec<String>> = tos.iter().cloned().collect();
                    println!("  {} → {}", g.display(&root, from), show(&tos).join(", "));
                }
            }
        }
    }

    #[test]
    fn this_workspace_passes() {
        acyclic_modules(&root()).expect("no module cycle outside CYCLES_PENDING");
        layered_modules(&root()).expect("layers point one way");
        conflict_markers(&root()).expect("no conflict markers");
        dead_links(&root()).expect("no dead links");
        long_functions(&root()).expect("no long function outside LONG_FUNCTIONS_PENDING");
    }
}
