//! The README as a front page: its example is the one the guide compiles, every link into the
//! guide (from the README and from the guide itself) lands on a chapter and a section that exist,
//! its links to files of the repository name files that exist, and it stays short.

use std::path::{Path, PathBuf};

const README: &str = include_str!("../README.md");
const GUIDE_URL: &str = "https://docs.rs/idem-runtime/latest/idem_runtime/guide/";
const GUIDE_PATH: &str = "crate::guide";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn guide_dir() -> PathBuf {
    root().join("idem-runtime/src/guide")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The guide's index as markdown: `guide/mod.rs`'s `//!` lines.
fn guide_index() -> String {
    let source = read(&guide_dir().join("mod.rs"));
    let docs = source.lines().filter_map(|line| line.strip_prefix("//!"));
    docs.map(|line| line.strip_prefix(' ').unwrap_or(line)).collect::<Vec<_>>().join("\n")
}

/// The chapter a module path names (`[]` is the index, `["stores", "redis"]` the Redis
/// chapter), as markdown; `None` when `guide/mod.rs` declares no such module.
fn chapter(modules: &[&str]) -> Option<String> {
    let Some(last) = modules.last() else { return Some(guide_index()) };
    let declarations = read(&guide_dir().join("mod.rs"));
    let mut rest = declarations.as_str();
    for module in modules {
        rest = &rest[rest.find(&format!("pub mod {module} {{"))?..];
    }
    Some(read(&guide_dir().join(format!("{last}.md"))))
}

/// Every `.rs` and `.md` file under `dir`, at any depth.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs" || ext == "md") {
            found.push(path);
        }
    }
    found
}

/// The first ```` ```rust ```` block of `markdown`, without the lines rustdoc hides (`# …`).
fn first_rust_block(markdown: &str) -> String {
    let start = markdown.find("```rust\n").expect("a rust block") + "```rust\n".len();
    let end = start + markdown[start..].find("\n```").expect("a closed block");
    let shown = markdown[start..end].lines().filter(|line| *line != "#" && !line.starts_with("# "));
    shown.collect::<Vec<_>>().join("\n")
}

/// The anchors rustdoc gives the headings of `markdown`: lower-cased letters, digits, `-` and
/// `_`, a `-` for each blank, anything else dropped.
fn anchors(markdown: &str) -> Vec<String> {
    let mut anchors = Vec::new();
    let mut code = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            code = !code;
        } else if let Some(heading) = line.trim_start_matches('#').strip_prefix(' ').filter(|_| !code) {
            if line.starts_with('#') {
                let id = heading.chars().filter_map(|c| match c {
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
                    c if c.is_whitespace() => Some('-'),
                    _ => None,
                });
                anchors.push(id.collect());
            }
        }
    }
    anchors
}

/// Every link target in `markdown` that starts with `prefix`, up to its closing `)` or the end of
/// its line (a reference definition).
fn targets<'a>(markdown: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = markdown;
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at..];
        let end = rest.find([')', ' ', '\n']).unwrap_or(rest.len());
        found.push(&rest[..end]);
        rest = &rest[end..];
    }
    found
}

/// Whether `fragment` (empty for none) is an anchor of the chapter `modules` names.
fn lands(modules: &[&str], fragment: &str) -> Result<(), String> {
    let chapter = chapter(modules).ok_or_else(|| format!("no chapter guide::{}", modules.join("::")))?;
    if fragment.is_empty() || anchors(&chapter).iter().any(|anchor| anchor == fragment) {
        Ok(())
    } else {
        Err(format!("guide::{} has no section #{fragment}", modules.join("::")))
    }
}

#[test]
fn the_first_example_is_the_one_the_guide_compiles() {
    assert_eq!(first_rust_block(README), first_rust_block(&guide_index()), "README.md's example and guide/mod.rs's");
}

#[test]
fn links_into_the_guide_land_on_chapters_and_sections_that_exist() {
    let mut broken = Vec::new();
    let mut seen = 0;
    for file in ["README.md", "idem-runtime/README.md", "BENCHMARKS.md", "RELIABILITY.md"] {
        let text = read(&root().join(file));
        for url in targets(&text, GUIDE_URL) {
            let (page, fragment) = url[GUIDE_URL.len()..].split_once('#').unwrap_or((&url[GUIDE_URL.len()..], ""));
            let Some(modules) = page.strip_suffix("index.html") else {
                broken.push(format!("{file}: {url} is not a chapter's page"));
                continue;
            };
            let modules: Vec<&str> = modules.split('/').filter(|m| !m.is_empty()).collect();
            broken.extend(lands(&modules, fragment).err().map(|e| format!("{file}: {url}: {e}")));
            seen += 1;
        }
    }
    for path in files(&root().join("idem-runtime/src")) {
        let name = path.strip_prefix(root()).unwrap().display().to_string();
        let text = read(&path);
        for target in targets(&text, GUIDE_PATH) {
            let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
            let modules: Vec<&str> = path.split("::").skip(2).collect();
            broken.extend(lands(&modules, fragment).err().map(|e| format!("{name}: {target}: {e}")));
            seen += 1;
        }
        if name.ends_with(".md") {
            for target in targets(&text, "(#") {
                let fragment = &target[2..];
                if !anchors(&text).iter().any(|anchor| anchor == fragment) {
                    broken.push(format!("{name}: no section #{fragment}"));
                }
                seen += 1;
            }
        }
    }
    assert!(seen > 20, "only {seen} links into the guide were found");
    assert!(broken.is_empty(), "links that land nowhere:\n{}", broken.join("\n"));
}

#[test]
fn links_to_files_of_the_repository_name_files_that_exist() {
    let mut missing = Vec::new();
    for target in targets(README, "](") {
        let target = &target[2..];
        if !target.contains("://") && !target.starts_with('#') && !root().join(target).exists() {
            missing.push(target);
        }
    }
    assert!(missing.is_empty(), "README.md links to files that do not exist: {missing:?}");
}

#[test]
fn the_front_page_stays_under_16_kib() {
    assert!(README.len() <= 16 * 1024, "README.md is {} bytes: move details into the guide", README.len());
}

#[test]
fn anchors_are_made_as_rustdoc_makes_them() {
    let anchors = anchors("# Shaping idem's responses, observing outcomes\n```\n# not a heading\n```\n## `Tx` costs");
    assert_eq!(anchors, ["shaping-idems-responses-observing-outcomes", "tx-costs"]);
}
