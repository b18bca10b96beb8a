//! Every default README.md states is the one the binaries state in `--help` (which is what they
//! run with, and what docs/configuration.md is generated from).
//!
//! README states defaults in two shapes, both read here:
//! - tables with a `flag` and a `default` column (`` `--a`, `--b` `` | `1, 2`), and
//! - prose: `` `--flag` (VALUE…) ``, where VALUE starts with a digit or is back-quoted.
//!
//! A README value that is not a value (`none`, `unlimited`, `host name`, `` `--dial-timeout` ``)
//! says the flag has no fixed default: `--help` must then show none. A default that depends on
//! other flags (`--benchmark-ops`) has no `[default: …]`; its help text states it as `default X`.

use std::{collections::BTreeMap, path::Path, time::Duration};

use etcd_monitor_tests::{binary, docs};

/// One flag of a `--help` text: its whole entry and its `[default: …]`, if any.
#[derive(Debug)]
struct HelpFlag {
    text: String,
    default: Option<String>,
}

/// The flags of a clap `--help` text, by long name (without `--`).
fn parse_help(help: &str) -> BTreeMap<String, HelpFlag> {
    let mut flags = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let finish = |entry: Option<(String, String)>, flags: &mut BTreeMap<String, HelpFlag>| {
        if let Some((name, text)) = entry {
            let default = text.find("[default: ").and_then(|start| {
                let rest = &text[start + "[default: ".len()..];
                rest.find(']').map(|end| rest[..end].trim().to_string())
            });
            flags.insert(name, HelpFlag { text, default });
        }
    };
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        // Entries start with `-x, --name` or `--name` at a small indent; their text is deeper.
        if indent <= 6 && trimmed.starts_with('-') {
            finish(current.take(), &mut flags);
            if let Some(at) = trimmed.find("--") {
                let name: String = trimmed[at + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                // A short help puts the text on the entry's own line.
                let rest = trimmed[at + 2 + name.len()..].to_string();
                current = Some((name, rest));
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push(' ');
            text.push_str(trimmed);
        }
    }
    finish(current.take(), &mut flags);
    flags
}

/// Which binary a README section describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Binary {
    Collector,
    Agent,
    /// `etcd-monitor mcp` (a section whose heading says MCP).
    Mcp,
}

/// A default README states.
#[derive(Debug)]
struct Documented {
    binary: Binary,
    flag: String,
    value: String,
    line: usize,
}

/// The long flag names in back-quoted spans of `cell` (`` `--match REGEX` `` → `match`).
fn quoted_flags(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| span.strip_prefix("--"))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect()
        })
        .collect()
}

/// Splits a table's default cell into one value per flag (`1, 2` or `1 / 2`).
fn split_defaults(cell: &str, n: usize) -> Vec<String> {
    let cell = cell.trim();
    if n == 1 {
        return vec![cell.to_string()];
    }
    for sep in [" / ", ", "] {
        let parts: Vec<String> = cell.split(sep).map(|p| p.trim().to_string()).collect();
        if parts.len() == n {
            return parts;
        }
    }
    vec![cell.to_string(); n]
}

/// Every default README.md states, with the binary its section describes.
fn parse_readme(text: &str) -> Vec<Documented> {
    let mut out = Vec::new();
    let mut binary = Binary::Collector;
    let mut in_table = false;
    let mut in_code = false;
    let mut paragraph: Vec<(usize, &str)> = Vec::new();
    let flush = |paragraph: &mut Vec<(usize, &str)>, binary: Binary, out: &mut Vec<Documented>| {
        // Prose: `--flag` (VALUE…), possibly across a line break.
        let mut joined = String::new();
        let mut starts = Vec::new();
        for (line, text) in paragraph.drain(..) {
            starts.push((joined.len(), line));
            joined.push_str(text);
            joined.push(' ');
        }
        let line_of = |at: usize| {
            starts
                .iter()
                .rev()
                .find(|(start, _)| *start <= at)
                .map(|(_, l)| *l)
                .unwrap_or(0)
        };
        let mut from = 0;
        while let Some(found) = joined[from..].find("`--") {
            let start = from + found;
            from = start + 3;
            let Some(close) = joined[start + 1..].find('`') else {
                break;
            };
            let flag = &joined[start + 3..start + 1 + close];
            if flag.ends_with('-') || !flag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                continue;
            }
            let after = joined[start + 2 + close..].trim_start();
            let Some(inner) = after.strip_prefix('(') else {
                continue;
            };
            let end = inner.find([',', ')']).unwrap_or(inner.len());
            let value = inner[..end].split_whitespace().next().unwrap_or_default();
            let is_value = value.starts_with(|c: char| c.is_ascii_digit())
                || (value.len() > 2 && value.starts_with('`') && value.ends_with('`'));
            if is_value {
                out.push(Documented {
                    binary,
                    flag: flag.to_string(),
                    value: value.to_string(),
                    line: line_of(start),
                });
            }
        }
    };
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.starts_with("```") {
            in_code = !in_code;
            flush(&mut paragraph, binary, &mut out);
            continue;
        }
        if in_code {
            continue;
        }
        if let Some(heading) = line.strip_prefix('#') {
            flush(&mut paragraph, binary, &mut out);
            binary = if heading.to_lowercase().contains("agent") {
                Binary::Agent
            } else if heading.contains("MCP") {
                Binary::Mcp
            } else {
                Binary::Collector
            };
            continue;
        }
        if line.starts_with('|') {
            flush(&mut paragraph, binary, &mut out);
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            if cells.len() >= 2
                && cells[0].eq_ignore_ascii_case("flag")
                && cells[1].eq_ignore_ascii_case("default")
            {
                in_table = true;
                continue;
            }
            if in_table && cells.len() >= 2 && !cells[0].starts_with("---") {
                let flags = quoted_flags(cells[0]);
                let values = split_defaults(cells[1], flags.len());
                for (flag, value) in flags.into_iter().zip(values) {
                    out.push(Documented {
                        binary,
                        flag,
                        value,
                        line: n,
                    });
                }
            }
            continue;
        }
        in_table = false;
        if line.trim().is_empty() {
            flush(&mut paragraph, binary, &mut out);
        } else {
            paragraph.push((n, line));
        }
    }
    flush(&mut paragraph, binary, &mut out);
    out
}

/// A humantime-style duration (`30s`, `200ms`, `7d`, `7days`), for comparing spellings.
fn duration(s: &str) -> Option<Duration> {
    let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().ok()?;
    let secs = match &s[digits.len()..] {
        "ms" => return Some(Duration::from_millis(n)),
        "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" | "day" | "days" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n * secs))
}

/// README's spelling of a value (`` `4194304` ``, `64 MiB`, `7d`), normalised for comparison
/// with `--help`'s; `None` when it is not a value (`none`, `host name`, `` `--dial-timeout` ``).
fn readme_value(raw: &str) -> Option<String> {
    let v = raw.trim();
    let quoted =
        v.len() > 2 && v.starts_with('`') && v.ends_with('`') && !v[1..v.len() - 1].contains('`');
    let v = if quoted { &v[1..v.len() - 1] } else { v };
    if v.starts_with("--") || (!quoted && !v.starts_with(|c: char| c.is_ascii_digit())) {
        return None;
    }
    if let Some(n) = v.strip_suffix(" MiB").and_then(|n| n.parse::<u64>().ok()) {
        return Some((n << 20).to_string());
    }
    Some(v.replace(", ", ","))
}

fn same_value(readme: &str, help: &str) -> bool {
    let help = help.replace(", ", ",");
    if readme == help {
        return true;
    }
    if let (Ok(a), Ok(b)) = (readme.parse::<f64>(), help.parse::<f64>()) {
        return a == b;
    }
    matches!((duration(readme), duration(&help)), (Some(a), Some(b)) if a == b)
}

/// Compares README's defaults with the `--help` of the binaries in `bin`; returns every
/// mismatch and the number of defaults compared.
fn compare(readme: &str, collector: &str, agent: &str, mcp: &str) -> (Vec<String>, usize) {
    let collector = parse_help(collector);
    let agent = parse_help(agent);
    let mcp = parse_help(mcp);
    let mut problems = Vec::new();
    let documented = parse_readme(readme);
    for d in &documented {
        let (name, flags) = match d.binary {
            Binary::Collector => ("etcd-monitor", &collector),
            Binary::Agent => ("etcd-monitor-agent", &agent),
            Binary::Mcp => ("etcd-monitor mcp", &mcp),
        };
        let Some(flag) = flags.get(&d.flag) else {
            problems.push(format!(
                "README.md:{}: `--{}` is not a flag of {name}",
                d.line, d.flag
            ));
            continue;
        };
        match (readme_value(&d.value), &flag.default) {
            (Some(readme), Some(help)) if same_value(&readme, help) => {}
            (None, None) => {}
            (None, Some(help)) if d.value == "off" && help == "false" => {}
            // A default that depends on other flags is stated in the flag's help text.
            (Some(readme), None) if flag.text.contains(&format!("default {readme}")) => {}
            (readme, help) => problems.push(format!(
                "README.md:{}: `--{}` of {name}: README says {:?} ({readme:?}), --help says {help:?}",
                d.line, d.flag, d.value
            )),
        }
    }
    (problems, documented.len())
}

#[test]
fn readme_defaults_are_the_binaries_defaults() -> anyhow::Result<()> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))?;
    let collector = docs::help(&binary("etcd-monitor")?)?;
    let agent = docs::help(&binary("etcd-monitor-agent")?)?;
    let mcp = docs::help_of(&binary("etcd-monitor")?, &["mcp"])?;
    let (problems, compared) = compare(&readme, &collector, &agent, &mcp);
    assert!(
        parse_readme(&readme)
            .iter()
            .any(|d| d.binary == Binary::Mcp && d.flag == "timeout"),
        "the MCP flag table was not read"
    );
    assert!(
        problems.is_empty(),
        "README.md and --help disagree:\n{}",
        problems.join("\n")
    );
    // The parser found what README states (not an empty list that trivially agrees).
    assert!(
        compared >= 40,
        "only {compared} defaults found in README.md"
    );
    let documented = parse_readme(&readme);
    for flag in [
        "diagnosis-neighbor-share",
        "diagnosis-slow-device-ms",
        "health-check-interval",
        "api-port",
        "benchmark-clients",
    ] {
        assert!(
            documented.iter().any(|d| d.flag == flag),
            "README's default of --{flag} was not found"
        );
    }
    let agent_flags: Vec<_> = documented
        .iter()
        .filter(|d| d.binary == Binary::Agent)
        .map(|d| d.flag.as_str())
        .collect();
    assert!(
        agent_flags.contains(&"queue-bytes") && agent_flags.contains(&"probes"),
        "the agent's table was not read: {agent_flags:?}"
    );
    Ok(())
}

/// The comparison catches a wrong default, in prose and in a table, for either binary.
#[test]
fn a_wrong_default_is_caught() {
    let collector = "Options:\n      --diagnosis-neighbor-share <X>\n          Share.\n\n          [env: X=]\n          [default: 0.5]\n      --dial-timeout <D>\n          [default: 5s]\n      --data-dir <D>\n          Where.\n";
    let agent = "Options:\n      --queue-bytes <N>\n          [default: 67108864]\n      --node-name <N>\n          Name.\n";
    let readme = "## The collector\n\nKnobs: `--diagnosis-neighbor-share` (0.3 of the\ndevice's I/O), `--dial-timeout`\n(5s).\n\n## Running the agent by hand\n\n| flag | default | meaning |\n|---|---|---|\n| `--queue-bytes`, `--node-name` | 64 MiB, host name | cap |\n";
    let (problems, compared) = compare(readme, collector, agent, "");
    assert_eq!(compared, 4, "{problems:?}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("diagnosis-neighbor-share"),
        "{problems:?}"
    );
    let fixed = readme.replace("(0.3", "(0.5");
    assert_eq!(
        compare(&fixed, collector, agent, "").0,
        Vec::<String>::new()
    );
    let wrong_agent = readme.replace("64 MiB", "32 MiB");
    assert_eq!(compare(&wrong_agent, collector, agent, "").0.len(), 2);
    let unknown = readme.replace("`--node-name`", "`--node`");
    assert!(compare(&unknown, collector, agent, "").0[1].contains("not a flag"));
}
