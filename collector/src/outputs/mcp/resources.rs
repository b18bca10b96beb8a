//! The runbooks (`docs/runbooks.md`, compiled in) as MCP resources: the whole document at
//! [`ALL_URI`], and each alert's section (a `###` heading) at `etcd-monitor://runbooks/<alert>`,
//! so an assistant that sees an alert reads what to do about it.

use rmcp::model::{Resource, ResourceContents};

/// The runbooks document, as built into this binary.
const RUNBOOKS: &str = include_str!("../../../../docs/runbooks.md");

/// URI of the whole document.
pub const ALL_URI: &str = "etcd-monitor://runbooks";

/// One alert's runbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// The alert's name (the heading).
    pub alert: String,
    /// The `##` group it is under (whose alerts: the etcd mixin, etcd-monitor, the agent).
    pub group: String,
    /// The section's markdown, heading included.
    pub text: String,
}

impl Section {
    /// Its resource URI.
    pub fn uri(&self) -> String {
        format!("{ALL_URI}/{}", self.alert)
    }
}

/// Every `###` section of `doc` under its `##` group; a repeated heading keeps its first.
pub fn sections(doc: &str) -> Vec<Section> {
    fn finish(out: &mut Vec<Section>, done: Option<Section>) {
        if let Some(s) = done
            && !out.iter().any(|o| o.alert == s.alert)
        {
            out.push(s);
        }
    }
    let mut out: Vec<Section> = Vec::new();
    let mut group = String::new();
    let mut current: Option<Section> = None;
    for line in doc.lines() {
        let heading = line.strip_prefix("### ").map(str::trim);
        if heading.is_some() || line.starts_with("## ") || line.starts_with("# ") {
            finish(&mut out, current.take());
        }
        if let Some(g) = line.strip_prefix("## ") {
            group = g.trim().to_string();
        }
        match (heading, current.as_mut()) {
            (Some(alert), _) if !alert.is_empty() => {
                current = Some(Section {
                    alert: alert.to_string(),
                    group: group.clone(),
                    text: format!("{line}\n"),
                });
            }
            (_, Some(s)) => {
                s.text.push_str(line);
                s.text.push('\n');
            }
            _ => {}
        }
    }
    finish(&mut out, current);
    out
}

/// The resources listed: the document, then one per alert.
pub fn list() -> Vec<Resource> {
    let mut all = vec![
        Resource::new(ALL_URI, "runbooks")
            .with_title("etcd-monitor runbooks")
            .with_description("Every alert's meaning, checks and fixes (docs/runbooks.md).")
            .with_mime_type("text/markdown")
            .with_size(RUNBOOKS.len() as u64),
    ];
    all.extend(sections(RUNBOOKS).into_iter().map(|s| {
        Resource::new(s.uri(), s.alert.clone())
            .with_title(format!("Runbook: {}", s.alert))
            .with_description(format!("What to do when {} fires ({}).", s.alert, s.group))
            .with_mime_type("text/markdown")
            .with_size(s.text.len() as u64)
    }));
    all
}

/// The contents at `uri`, or None when no resource has it.
pub fn read(uri: &str) -> Option<ResourceContents> {
    let text = if uri == ALL_URI {
        RUNBOOKS.to_string()
    } else {
        sections(RUNBOOKS)
            .into_iter()
            .find(|s| s.uri() == uri)?
            .text
    };
    Some(ResourceContents::text(text, uri).with_mime_type("text/markdown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_split_at_alert_headings_under_their_group() {
        let doc = "# Runbooks\nintro\n## Group A\nabout A\n### One\nfirst\n\n### Two\nsecond\n## Group B\n### Three\nthird\n### One\nagain\n";
        let s = sections(doc);
        let names: Vec<_> = s.iter().map(|s| s.alert.as_str()).collect();
        assert_eq!(names, ["One", "Two", "Three"]);
        assert_eq!(s[0].text, "### One\nfirst\n\n");
        assert_eq!(s[0].group, "Group A");
        assert_eq!(s[2].group, "Group B");
        assert_eq!(s[2].text, "### Three\nthird\n");
        assert_eq!(s[0].uri(), "etcd-monitor://runbooks/One");
    }

    #[test]
    fn the_real_runbooks_list_every_alert_and_read_back() {
        let list = list();
        assert!(list.len() > 20, "{} resources", list.len());
        let slow = read("etcd-monitor://runbooks/SlowWalFsync").expect("SlowWalFsync");
        let ResourceContents::TextResourceContents { text, .. } = slow else {
            panic!("not text");
        };
        assert!(text.starts_with("### SlowWalFsync\n"), "{text}");
        assert!(!text.contains("### MemberUnavailable"), "{text}");
        assert!(read(ALL_URI).is_some());
        assert!(read("etcd-monitor://runbooks/NoSuchAlert").is_none());
    }
}
