//! The documentation in the repository stands on its own and matches the
//! code: every configuration key the code accepts is in the key tables of
//! docs/contract.md and no table names a key the code does not accept;
//! every relative link in README.md and docs/ resolves inside the
//! repository; the shipped systemd unit passes `systemd-analyze verify`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every docs/*.md.
fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    assert!(
        docs.len() >= 3,
        "docs/ holds the contract, operations and design: {docs:?}"
    );
    files.extend(docs);
    files
}

/// Every key path the YAML accepts, read from `src/config/raw.rs`
/// (`servers.<name>.host`, `retry.attempts`), and the sections that hold
/// keys (`servers.<name>`, `metrics`).
fn code_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let raw = std::fs::read_to_string(root().join("src/config/raw.rs")).unwrap();
    let mut structs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in raw.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("pub struct ") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            structs.entry(name.clone()).or_default();
            current = Some(name);
        } else if t == "}" {
            current = None;
        } else if let Some(c) = &current
            && let Some(rest) = t.strip_prefix("pub ")
            && let Some((name, ty)) = rest.split_once(':')
            && !name.contains(' ')
            && !name.contains('(')
        {
            structs.get_mut(c).unwrap().push((
                name.to_string(),
                ty.trim().trim_end_matches(',').to_string(),
            ));
        }
    }
    fn walk(
        structs: &BTreeMap<String, Vec<(String, String)>>,
        name: &str,
        prefix: &str,
        keys: &mut BTreeSet<String>,
        sections: &mut BTreeSet<String>,
    ) {
        for (field, ty) in &structs[name] {
            let words: Vec<&str> = ty
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .filter(|w| !w.is_empty())
                .collect();
            match words.iter().find(|w| structs.contains_key(**w)) {
                Some(inner) => {
                    let section = if words.contains(&"BTreeMap") {
                        format!("{prefix}{field}.<name>")
                    } else {
                        format!("{prefix}{field}")
                    };
                    sections.insert(format!("{prefix}{field}"));
                    sections.insert(section.clone());
                    walk(structs, inner, &format!("{section}."), keys, sections);
                }
                None => {
                    keys.insert(format!("{prefix}{field}"));
                }
            }
        }
    }
    let (mut keys, mut sections) = (BTreeSet::new(), BTreeSet::new());
    for top in ["AgentFile", "JobFile"] {
        assert!(structs.contains_key(top), "raw.rs has no struct {top}");
        walk(&structs, top, "", &mut keys, &mut sections);
    }
    (keys, sections)
}

/// The keys named in the first column of every `| key | default | meaning |`
/// table of a markdown text. `servers.<name>.password` / `password_file`
/// names two keys: a bare name shares the path of the first.
fn documented_keys(markdown: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut in_table = false;
    for line in markdown.lines() {
        let t = line.trim();
        if t.replace(' ', "") == "|key|default|meaning|" {
            in_table = true;
            continue;
        }
        if !t.starts_with('|') {
            in_table = false;
            continue;
        }
        if !in_table || t.starts_with("|---") {
            continue;
        }
        let cell = t.split('|').nth(1).unwrap();
        let pieces: Vec<String> = cell
            .split('/')
            .map(|p| p.trim().trim_matches('`').to_string())
            .filter(|p| !p.is_empty())
            .collect();
        let parent = pieces
            .first()
            .and_then(|p| p.rsplit_once('.'))
            .map(|(parent, _)| format!("{parent}."))
            .unwrap_or_default();
        for p in &pieces {
            keys.insert(if p.contains('.') {
                p.clone()
            } else {
                format!("{parent}{p}")
            });
        }
    }
    keys
}

#[test]
fn docs_document_exactly_the_configuration_keys_the_code_accepts() {
    let (code, sections) = code_keys();
    assert!(
        code.contains("servers.<name>.host") && code.contains("metrics.listen"),
        "{code:?}"
    );
    let contract = std::fs::read_to_string(root().join("docs/contract.md")).unwrap();
    let reference = documented_keys(&contract);
    let undocumented: Vec<_> = code.iter().filter(|k| !reference.contains(*k)).collect();
    assert!(
        undocumented.is_empty(),
        "keys the code accepts but docs/contract.md does not document: {undocumented:?}"
    );
    // No key table anywhere (README included) names a key the code does not accept.
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let unknown: Vec<_> = documented_keys(&text)
            .into_iter()
            .filter(|k| !code.contains(k) && !sections.contains(k))
            .collect();
        assert!(
            unknown.is_empty(),
            "{} documents keys the code does not accept: {unknown:?}",
            file.display()
        );
    }
}

#[test]
fn the_key_table_reader_sees_paths_shared_names_and_only_key_tables() {
    let md = "| key | default | meaning |\n|---|---|---|\n| `servers.<name>.password` / `password_file` | none | x |\n| `state_dir` | `state` | y |\n\n| metric | type |\n|---|---|\n| `ferry_job_runs_total` | counter |\n";
    let keys: Vec<String> = documented_keys(md).into_iter().collect();
    assert_eq!(
        keys,
        [
            "servers.<name>.password",
            "servers.<name>.password_file",
            "state_dir"
        ]
    );
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings (a repeated heading gets `-1`, `-2`).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let s = slug(line.trim_start_matches('#'));
        let n = seen.entry(s.clone()).or_insert(0);
        out.insert(if *n == 0 {
            s.clone()
        } else {
            format!("{s}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of the inline links `[text](target)` outside fenced code.
fn links(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
        }
        if fenced {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_in_the_readme_and_docs_resolves_inside_the_repository() {
    let repo = root().canonicalize().unwrap();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        assert!(
            !text.contains("../shared"),
            "{name} points outside the repository (../shared)"
        );
        for target in links(&text) {
            if target.starts_with("https://")
                || target.starts_with("http://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            checked += 1;
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            assert!(!path.starts_with('/'), "{name}: absolute link {target}");
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let real = resolved.canonicalize().unwrap_or_else(|_| {
                panic!(
                    "{name}: link {target} does not resolve ({})",
                    resolved.display()
                )
            });
            assert!(
                real.starts_with(&repo),
                "{name}: link {target} leaves the repository"
            );
            if let Some(anchor) = anchor {
                let md = std::fs::read_to_string(&real)
                    .unwrap_or_else(|_| panic!("{name}: {target}: an anchor into a folder"));
                assert!(
                    anchors(&md).contains(anchor),
                    "{name}: link {target}: no heading #{anchor} in {}; headings: {:?}",
                    path,
                    anchors(&md)
                );
            }
        }
    }
    assert!(checked > 20, "only {checked} links checked");
}

#[test]
fn anchors_follow_githubs_rules() {
    let a = anchors(
        "# ferry\n## The agent: `ferry run`\n### `history --json`\n## What ferry remembers about a partner's server\n## Tests\n## Tests\n```\n# not a heading\n```\n",
    );
    for s in [
        "ferry",
        "the-agent-ferry-run",
        "history---json",
        "what-ferry-remembers-about-a-partners-server",
        "tests",
        "tests-1",
    ] {
        assert!(a.contains(s), "{s}: {a:?}");
    }
    assert!(!a.contains("not-a-heading"));
}

/// The unit as shipped, with ExecStart pointing at the binary under test and
/// the man pages its `Documentation=` names generated by `ferry man`.
#[test]
fn the_shipped_systemd_unit_is_type_notify_with_a_watchdog_and_passes_systemd_analyze() {
    let unit = std::fs::read_to_string(root().join("examples/ferry.service")).unwrap();
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "{line} missing from ferry.service"
        );
    }
    assert!(unit.contains("ferry man --out") && unit.contains("ferry completions bash"));
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: systemd-analyze verify — systemd-analyze is not installed here !!!!!!!!\n"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(support::ferry_bin());
    std::fs::write(
        dir.path().join("ferry.service"),
        unit.replace("/usr/local/bin/ferry", bin.to_str().unwrap()),
    )
    .unwrap();
    let man = dir.path().join("man/man1");
    let out = std::process::Command::new(bin)
        .args(["man", "--out"])
        .arg(&man)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", support::stderr(&out));
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(dir.path().join("ferry.service"))
        .env("MANPATH", dir.path().join("man"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        support::stdout(&out),
        support::stderr(&out)
    );
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or(())
}

#[test]
fn the_contract_lists_every_command_and_only_commands_that_exist() {
    use clap::CommandFactory;
    let contract = std::fs::read_to_string(root().join("docs/contract.md")).unwrap();
    let start = contract.find("## Commands and exit codes").unwrap();
    let block = &contract[start..];
    let block = &block[block.find("```").unwrap() + 3..];
    let block = &block[..block.find("```").unwrap()];
    let listed: BTreeSet<String> = block
        .lines()
        .filter_map(|l| {
            let l = l.trim_start().strip_prefix("ferry ")?;
            let l = l.strip_prefix("[--config FILE] ").unwrap_or(l);
            l.split_whitespace().next().map(str::to_string)
        })
        .collect();
    let built: BTreeSet<String> = ferry::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .filter(|n| n != "help")
        .collect();
    assert_eq!(
        listed, built,
        "docs/contract.md's command synopsis vs the clap definitions"
    );
}
