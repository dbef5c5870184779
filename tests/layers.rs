//! The layer map of `src/lib.rs`, enforced: imports point only downwards.
//!
//! proto's source is teaching material, so its structure must stay legible:
//! a student reading `wire/` never needs `cmd/`, and a change cannot quietly
//! make `transport` depend on `server` again. This test reads every file under
//! `src/`, finds each `crate::module` it names (outside comments and
//! `#[cfg(test)]` code) and fails on any reference to a module of the same or
//! a higher layer, or to a crate that belongs elsewhere (clap to `cmd` and
//! `cli`, table and progress-bar crates to `output`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Layers from the ground up. Modules on one line are peers and must not
/// import each other.
const LAYERS: &[&[&str]] = &[
    &["units"],
    &["wire"],
    &["echo"],
    &["transport"],
    &["server", "client"],
    &["lab"],
    &["measure"],
    &["output"],
    &["cmd"],
    &["cli"],
];

/// Outside crates that only some modules may use: the command line belongs
/// to `cmd` and `cli`; tables and progress bars are presentation, `output`'s.
const CRATE_HOMES: &[(&str, &[&str])] = &[
    ("clap", &["cmd", "cli"]),
    ("indicatif", &["output"]),
    ("comfy_table", &["output"]),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and without `#[cfg(test)]` items (tests may
/// reach anywhere), line numbers kept.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut in_block_comment = false;
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break; // test modules sit at the end of a file
        }
        let mut code = String::new();
        let mut rest = line;
        loop {
            if in_block_comment {
                match rest.find("*/") {
                    Some(end) => {
                        in_block_comment = false;
                        rest = &rest[end + 2..];
                    }
                    None => break,
                }
            } else {
                let line_comment = rest.find("//");
                let block_comment = rest.find("/*");
                match (line_comment, block_comment) {
                    (Some(l), Some(b)) if b < l => {
                        code.push_str(&rest[..b]);
                        in_block_comment = true;
                        rest = &rest[b + 2..];
                    }
                    (None, Some(b)) => {
                        code.push_str(&rest[..b]);
                        in_block_comment = true;
                        rest = &rest[b + 2..];
                    }
                    (Some(l), _) => {
                        code.push_str(&rest[..l]);
                        break;
                    }
                    (None, None) => {
                        code.push_str(rest);
                        break;
                    }
                }
            }
        }
        lines.push((number + 1, code));
    }
    lines
}

/// Every `crate::name` a line refers to, including `use crate::{a, b::c}`.
fn crate_references(code: &str, pending_group: &mut bool, out: &mut BTreeSet<String>) {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    if *pending_group {
        // Inside a multi-line `use crate::{ ... };`
        for part in rest.split([',', '{']) {
            let name = ident(part.trim());
            if !name.is_empty() && !part.trim().starts_with('}') {
                out.insert(name);
            }
        }
        if rest.contains("};") {
            *pending_group = false;
        }
        return;
    }
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}');
            let inner = &group[..end.unwrap_or(group.len())];
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(inner[start..i].trim()));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            out.insert(ident(inner[start..].trim()));
            if end.is_none() {
                *pending_group = true;
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
}

#[test]
fn imports_point_only_downwards() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut unknown = BTreeSet::new();

    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap();
        let module = first
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if module == "lib" || module == "main" {
            continue; // the crate root declares every module; main is the top
        }
        let Some(own_layer) = layer_of(&module) else {
            unknown.insert(module);
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let mut pending_group = false;
        for (number, code) in code_lines(&text) {
            let mut referenced = BTreeSet::new();
            crate_references(&code, &mut pending_group, &mut referenced);
            for target in referenced {
                if target == module {
                    continue;
                }
                match layer_of(&target) {
                    Some(layer) if layer < own_layer => {}
                    Some(layer) => violations.push(format!(
                        "src/{}:{number}: `{module}` (layer {own_layer}) uses `{target}` (layer {layer}): {}",
                        relative.display(),
                        code.trim()
                    )),
                    None => {
                        unknown.insert(target);
                    }
                }
            }
            for (krate, homes) in CRATE_HOMES {
                let used =
                    code.contains(&format!("{krate}::")) || code.contains(&format!("use {krate}"));
                if used && !homes.contains(&module.as_str()) {
                    violations.push(format!(
                        "src/{}:{number}: `{module}` uses the `{krate}` crate, which belongs to {homes:?} only: {}",
                        relative.display(),
                        code.trim()
                    ));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules missing from this test's LAYERS table (add each where it belongs): {unknown:?}"
    );
    assert!(
        violations.is_empty(),
        "upward or sideways imports ({}):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_what_it_must() {
    let mut found = BTreeSet::new();
    let mut pending = false;
    crate_references(
        "use crate::{units::parse_duration, wire::{Frame, MAGIC}};",
        &mut pending,
        &mut found,
    );
    crate_references("let x = crate::lab::model::x();", &mut pending, &mut found);
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["lab", "units", "wire"]
    );
    let lines = code_lines("let a = 1; // crate::cmd\n/* crate::cli */ let b = crate::wire::X;\n#[cfg(test)]\nuse crate::cmd;");
    assert_eq!(lines.len(), 2);
    assert!(!lines[0].1.contains("cmd"));
    assert!(lines[1].1.contains("crate::wire") && !lines[1].1.contains("cli"));
}
