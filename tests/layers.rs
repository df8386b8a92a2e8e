//! Keeps the architecture honest: the layers of `src/` import only
//! downwards (`core` < `agent` < `tools`), the pure core does no I/O, and no
//! two modules import each other, directly or through others.
//!
//! This reads the source files rather than trusting convention; see
//! docs/architecture.md for the rule and where new code goes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers in import order: each may use only itself and those before it.
const LAYERS: [&str; 3] = ["core", "agent", "tools"];

/// What the pure core must never name: runtimes, sockets, files, clocks,
/// processes and the environment belong to the agent.
const CORE_FORBIDDEN: [&str; 12] = [
    "glommio",
    "tokio",
    "hyper",
    "crossbeam_channel",
    "std::net",
    "std::fs",
    "std::env",
    "std::process",
    "SystemTime",
    "Instant::now",
    "signal_hook",
    "libc::",
];

/// One source file: its layer, its top module in that layer, its text.
struct Source {
    path: PathBuf,
    layer: usize,
    module: String,
    text: String,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<Source> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    for (layer, name) in LAYERS.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src.join(name), &mut files);
        assert!(!files.is_empty(), "src/{name} has no Rust files");
        for path in files {
            let rel = path.strip_prefix(src.join(name)).unwrap();
            let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
            let module = first.trim_end_matches(".rs").to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            out.push(Source { path, layer, module, text });
        }
    }
    out
}

/// Every `crate::LAYER::MODULE` the text names, comments included (a doc
/// link to a higher layer is a dependency of the reader's understanding too).
fn references(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (layer, name) in LAYERS.iter().enumerate() {
        let needle = format!("crate::{name}::");
        let mut rest = text;
        while let Some(i) = rest.find(&needle) {
            rest = &rest[i + needle.len()..];
            let module: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !module.is_empty() {
                out.push((layer, module));
            }
        }
    }
    out
}

#[test]
fn layers_import_only_downwards() {
    let mut violations = Vec::new();
    for s in sources() {
        for (layer, module) in references(&s.text) {
            if layer > s.layer {
                violations.push(format!(
                    "{} ({}) imports crate::{}::{}",
                    s.path.display(),
                    LAYERS[s.layer],
                    LAYERS[layer],
                    module
                ));
            }
        }
    }
    assert!(violations.is_empty(), "imports against the layer order core < agent < tools:\n{}", violations.join("\n"));
}

#[test]
fn core_does_no_io_and_reads_no_configuration() {
    let mut violations = Vec::new();
    for s in sources().iter().filter(|s| s.layer == 0) {
        for (n, line) in s.text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in CORE_FORBIDDEN {
                if code.contains(word) {
                    violations.push(format!("{}:{}: {}", s.path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "the pure core names an I/O facility:\n{}", violations.join("\n"));
}

#[test]
fn no_import_cycles_between_modules() {
    // Nodes are `layer::module`; an edge means "names something of".
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources() {
        let from = format!("{}::{}", LAYERS[s.layer], s.module);
        let edges = graph.entry(from.clone()).or_default();
        for (layer, module) in references(&s.text) {
            let to = format!("{}::{}", LAYERS[layer], module);
            if to != from {
                edges.insert(to);
            }
        }
    }
    // Depth-first search; a grey node met again closes a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        cycles: &mut Vec<String>,
    ) {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                0 => visit(next, graph, state, stack, cycles),
                1 => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    cycles.push(format!("{} -> {}", stack[start..].join(" -> "), next));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
    }
    let (mut state, mut stack, mut cycles) = (BTreeMap::new(), Vec::new(), Vec::new());
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            visit(node, &graph, &mut state, &mut stack, &mut cycles);
        }
    }
    assert!(cycles.is_empty(), "import cycles between modules:\n{}", cycles.join("\n"));
}

#[test]
fn the_checks_see_a_violation() {
    // The scanner itself must find what it is looking for.
    let refs = references("use crate::agent::config::Config;\n/// see [`crate::tools::intake`]\n");
    assert_eq!(refs, vec![(1, "config".to_string()), (2, "intake".to_string())]);
}
