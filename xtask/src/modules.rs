//! `cargo xtask modules`: the import graph between each crate's top-level modules, and a check
//! that no two of them import each other (directly or round a longer cycle). A module's files
//! are `src/<name>.rs` or `src/<name>/**.rs`; an import is any `crate::<name>` path in code
//! (comments are ignored, so doc links do not count).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

/// Module → the modules it imports.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The graph of the crate whose sources are in `src`.
pub fn graph(src: &Path) -> Result<Graph> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        if path.is_dir() {
            modules.entry(name).or_default().extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            modules.entry(name).or_default().push(path);
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut graph = Graph::new();
    for (module, files) in &modules {
        let imports = graph.entry(module.clone()).or_default();
        for file in files {
            let code = strip_comments(&fs::read_to_string(file)?);
            for name in crate_paths(&code) {
                if names.contains(&name) && name != *module {
                    imports.insert(name);
                }
            }
        }
    }
    Ok(graph)
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(out)
}

/// The code without `//` comments (strings holding `//` are rare enough in this code base that
/// cutting them short loses no import).
fn strip_comments(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// The first segment of every `crate::` path, including each item of a `crate::{a, b::c}` group.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = rest.get(at + "crate::".len()..).unwrap_or_default();
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = true;
            let mut ident = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => ident.push(c),
                    _ if item_start && !ident.is_empty() => {
                        out.push(std::mem::take(&mut ident));
                        item_start = false;
                    }
                    _ => {}
                }
            }
            if !ident.is_empty() {
                out.push(ident);
            }
        } else {
            let ident: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(ident);
        }
    }
    out
}

/// Every cycle of the graph, each as the modules on it (starting from its smallest name).
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        let mut path = vec![start.clone()];
        walk(graph, start, &mut path, &mut found);
    }
    found.into_iter().collect()
}

fn walk(graph: &Graph, start: &str, path: &mut Vec<String>, found: &mut BTreeSet<Vec<String>>) {
    let Some(last) = path.last().cloned() else { return };
    for next in graph.get(&last).into_iter().flatten() {
        if next == start {
            // Only report each cycle once, from its smallest member.
            if path.iter().all(|m| m.as_str() >= start) {
                found.insert(path.clone());
            }
        } else if !path.contains(next) && next.as_str() > start {
            path.push(next.clone());
            walk(graph, start, path, found);
            path.pop();
        }
    }
}

/// The crates whose modules are checked.
pub const CRATES: [&str; 3] = ["sg-common", "sg-agent", "sg-ebpf"];

/// Prints each crate's graph; fails if any has a cycle.
pub fn check(root: &Path, print: bool) -> Result<()> {
    let mut problems = Vec::new();
    for krate in CRATES {
        let graph = graph(&root.join(krate).join("src"))?;
        if print {
            println!("{krate}:");
            for (module, imports) in &graph {
                let list: Vec<&str> = imports.iter().map(String::as_str).collect();
                println!("  {module:<12} -> {}", list.join(", "));
            }
        }
        for cycle in cycles(&graph) {
            problems.push(format!("{krate}: {} -> {}", cycle.join(" -> "), cycle.first().cloned().unwrap_or_default()));
        }
    }
    if problems.is_empty() {
        if print {
            println!("no module imports a module that imports it");
        }
        Ok(())
    } else {
        anyhow::bail!("import cycles between modules:\n  {}", problems.join("\n  "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_groups_are_read() {
        let code = "use crate::{agent::Agent, compile::{self, X}, status};\nfn f() { crate::clock::now(); }";
        assert_eq!(crate_paths(code), ["agent", "compile", "status", "clock"]);
    }

    #[test]
    fn cycles_are_found_once() {
        let g: Graph = [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
            .collect();
        assert_eq!(cycles(&g), [vec!["a", "b", "c"]]);
    }

    /// The repository itself: no crate's modules import each other.
    #[test]
    fn the_workspace_has_no_import_cycles() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
        check(root, false).unwrap();
    }
}
