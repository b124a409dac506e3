//! README.md, executed: every fenced `sh` block runs under bash, every `$ command` of a `text`
//! block runs and its shown output must appear, and every flag of the CLI synopsis must exist,
//! so the tour cannot drift from the binary.
//!
//! Blocks run in document order, in one scratch folder holding a copy of `examples/`, with the
//! `quiver` under test first on PATH. A small bash prelude makes long-running servers (`quiver
//! serve`, `quiver registry serve`, `quiver offline serve`) start in the background and waits
//! until they answer; they are stopped when their block ends. `curl` fails on an HTTP error
//! status, so a 4xx in the README is a failed test. `cargo run --release -- X` runs `quiver X`.
//! The only lines not run are listed in `SKIPPED`, each with its reason.

use std::path::Path;
use std::process::Command;

/// Lines of README blocks that are not run, and why. Each must still be found in the README.
const SKIPPED: &[(&str, &str)] = &[("scripts/test", "it is the suite this test is part of")];

const PRELUDE: &str = r#"
set -euo pipefail
__pids=()
__stop() {
  for p in "${__pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap __stop EXIT
__wait_http() {
  for _ in $(seq 1 300); do
    command curl -sf -o /dev/null "http://127.0.0.1:$1$2" && return 0
    sleep 0.1
  done
  echo "README test: nothing answered http://127.0.0.1:$1$2" >&2
  return 1
}
__flag() {
  local name=$1; shift
  while [ $# -gt 0 ]; do
    if [ "$1" = "$name" ]; then echo "$2"; return; fi
    shift
  done
}
quiver() {
  local port
  case "$1 ${2:-}" in
    "serve "*)
      command quiver "$@" & __pids+=($!)
      port=$(__flag --port "$@"); __wait_http "${port:-6566}" /ready ;;
    "registry serve")
      command quiver "$@" & __pids+=($!)
      port=$(__flag --port "$@"); __wait_http "${port:-6570}" /ready ;;
    "offline serve")
      command quiver "$@" & __pids+=($!)
      port=$(__flag --http-port "$@")
      if [ -z "$port" ]; then echo "README test: offline serve needs --http-port" >&2; return 1; fi
      __wait_http "$port" /health ;;
    *) command quiver "$@" ;;
  esac
}
cargo() {
  if [ "${1:-} ${2:-} ${3:-}" = "run --release --" ]; then shift 3; quiver "$@"
  else echo "README test: does not run cargo $*" >&2; return 1; fi
}
curl() { command curl --fail-with-body --silent --show-error --max-time 60 "$@"; }
"#;

struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    body: String,
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in readme.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                open = Some(Block {
                    line: i + 1,
                    lang: lang.trim().to_owned(),
                    body: String::new(),
                })
            }
            (Some(_), Some(_)) => out.push(open.take().expect("open block")),
            (Some(b), None) => {
                b.body.push_str(line);
                b.body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md ends inside a code block");
    out
}

struct Run {
    ok: bool,
    output: String,
}

fn bash(dir: &Path, script: &str) -> Run {
    let bin = Path::new(env!("CARGO_BIN_EXE_quiver"))
        .parent()
        .expect("binary dir");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("timeout")
        .args(["300", "bash", "-c"])
        .arg(format!("{PRELUDE}\n{script}"))
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("FEATURE_STORE_YAML_BASE64")
        .env_remove("QUIVER_REPO")
        .output()
        .expect("run bash");
    Run {
        ok: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `... ` in a shown line matches anything; durations (`0.08s`) match any duration.
fn line_matches(expected: &str, actual: &str) -> bool {
    let normalize = |s: &str| {
        let mut out = String::new();
        let mut rest = s;
        while let Some(c) = rest.chars().next() {
            // a decimal number directly followed by "s" is a duration
            let digits: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            if !digits.is_empty() && digits.contains('.') && rest[digits.len()..].starts_with('s') {
                out.push_str("<duration>");
                rest = &rest[digits.len() + 1..];
            } else {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        out
    };
    let (expected, actual) = (normalize(expected), normalize(actual));
    let mut parts = expected.split("...");
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

/// A `text` block of `$ command` lines, each followed by the output it shows.
fn check_session(dir: &Path, block: &Block, skipped: &mut Vec<&'static str>) {
    let mut commands: Vec<(String, Vec<String>)> = Vec::new();
    let mut continued = false;
    for line in block.body.lines() {
        if let Some(cmd) = line.strip_prefix("$ ") {
            commands.push((cmd.to_owned(), Vec::new()));
            continued = cmd.ends_with('\\');
        } else if continued {
            let (cmd, _) = commands.last_mut().expect("a command");
            cmd.push('\n');
            cmd.push_str(line);
            continued = line.ends_with('\\');
        } else if let Some((_, shown)) = commands.last_mut() {
            shown.push(line.to_owned());
        }
    }
    for (cmd, shown) in commands {
        if skip(&cmd, skipped) {
            continue;
        }
        let run = bash(dir, &cmd);
        assert!(
            run.ok,
            "README.md:{}: `{cmd}` failed:\n{}",
            block.line, run.output
        );
        let actual: Vec<&str> = run.output.lines().collect();
        let mut at = 0;
        for want in shown.iter().filter(|l| l.trim() != "...") {
            match actual[at..].iter().position(|a| line_matches(want, a)) {
                Some(i) => at += i + 1,
                None => panic!(
                    "README.md:{}: `{cmd}` does not print the line shown:\n  {want}\nit printed:\n{}",
                    block.line, run.output
                ),
            }
        }
    }
}

/// The synopsis: each `quiver sub ...` line's flags must be in `quiver sub --help`.
fn check_synopsis(dir: &Path, block: &Block) {
    // Indented lines continue the previous line's description.
    for line in block.body.lines().filter(|l| l.starts_with("quiver ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let sub: Vec<&str> = words
            .iter()
            .skip(1)
            .take_while(|w| {
                w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-')
            })
            .copied()
            .collect();
        let help = bash(dir, &format!("command quiver {} --help", sub.join(" ")));
        assert!(
            help.ok,
            "README.md:{}: `quiver {} --help` failed:\n{}",
            block.line,
            sub.join(" "),
            help.output
        );
        for flag in words.iter().filter_map(|w| {
            let w = w.trim_start_matches(['[', '(']);
            w.starts_with("--")
                .then(|| w.trim_end_matches([']', ')', ',']))
        }) {
            assert!(
                help.output.contains(flag),
                "README.md:{}: `quiver {}` has no flag {flag}:\n{}",
                block.line,
                sub.join(" "),
                help.output
            );
        }
    }
}

fn skip(line: &str, skipped: &mut Vec<&'static str>) -> bool {
    let line = line.trim();
    match SKIPPED.iter().find(|(s, _)| line == *s) {
        Some((s, _)) => {
            skipped.push(s);
            true
        }
        None => false,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn every_command_in_the_readme_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    copy_dir(&root.join("examples"), &scratch.path().join("examples"));
    for stale in ["registry.db", "online_store.db"] {
        let _ = std::fs::remove_file(scratch.path().join("examples/quickstart/data").join(stale));
    }

    let mut skipped = Vec::new();
    let mut ran = 0;
    for block in blocks(&readme) {
        match block.lang.as_str() {
            "sh" => {
                let script: String = block
                    .body
                    .lines()
                    .filter(|l| !skip(l, &mut skipped))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let run = bash(scratch.path(), &script);
                assert!(
                    run.ok,
                    "README.md:{}: the sh block failed:\n{}\n--- output:\n{}",
                    block.line, block.body, run.output
                );
                ran += 1;
            }
            "text" if block.body.starts_with("$ ") => {
                check_session(scratch.path(), &block, &mut skipped);
                ran += 1;
            }
            "text" if block.body.starts_with("quiver ") => {
                check_synopsis(scratch.path(), &block);
                ran += 1;
            }
            _ => {}
        }
    }
    for (line, why) in SKIPPED {
        assert!(
            skipped.contains(line),
            "SKIPPED names `{line}` ({why}), which README.md no longer has"
        );
    }
    assert!(
        ran >= 8,
        "only {ran} README blocks ran: was the README restructured?"
    );
}
