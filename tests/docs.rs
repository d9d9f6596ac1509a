//! The operator guide's policy reference (`docs/policy.md`) against the raw policy types: every
//! key of every section is documented in its section's table, and nothing documented there is
//! unknown to the parser.

use std::collections::{BTreeMap, BTreeSet};

/// Heading token (`[[routes]]`, `[routes.cors]`, …) → the keys it documents: the first column of
/// its `| key |` tables, and the keys its TOML examples set under that same table header.
fn documented(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let (mut in_code, mut code_table, mut key_table) = (false, None::<String>, false);
    let mut previous = "";
    for line in text.lines() {
        let prev = std::mem::replace(&mut previous, line);
        if line.starts_with("```") {
            in_code = !in_code;
            code_table = None;
            continue;
        }
        if in_code {
            let t = line.trim();
            if t.starts_with('[') {
                // `[headers.profiles.embeddable]` documents `[headers.profiles.NAME]`.
                let name = t.split('#').next().unwrap_or("").trim();
                code_table = Some(match name.strip_prefix("[headers.profiles.") {
                    Some(_) => "[headers.profiles.NAME]".to_string(),
                    None => name.to_string(),
                });
            } else if let (Some(table), Some((key, _))) = (&code_table, t.split_once(" = ")) {
                if !key.starts_with('#') && !key.contains(' ') {
                    out.entry(table.clone())
                        .or_default()
                        .insert(key.to_string());
                }
            }
            continue;
        }
        if line.starts_with('#') {
            current = line
                .split('`')
                .skip(1)
                .step_by(2)
                .find(|t| t.starts_with('['))
                .map(str::to_string);
            if let Some(c) = &current {
                out.entry(c.clone()).or_default();
            }
            continue;
        }
        if line.starts_with('|') && !prev.starts_with('|') {
            key_table = line.starts_with("| key ");
            continue;
        }
        let (Some(section), Some(row), true) = (&current, line.strip_prefix("| `"), key_table)
        else {
            continue;
        };
        let first_cell = row.split(" |").next().unwrap_or("");
        let keys = format!("`{first_cell}");
        for key in keys.split('`').skip(1).step_by(2) {
            out.get_mut(section).unwrap().insert(key.to_string());
        }
    }
    out
}

#[test]
fn the_policy_reference_matches_the_policy_types() {
    let text = std::fs::read_to_string("docs/policy.md").unwrap();
    let docs = documented(&text);
    let mut problems = Vec::new();
    for (section, fields) in portcullis::policy::reference::sections() {
        let fields: BTreeSet<String> = fields.iter().map(|f| f.to_string()).collect();
        if section == "policy file" {
            for f in &fields {
                let single = format!("[{f}]");
                let many = format!("[[{f}]]");
                if !docs.contains_key(&single) && !docs.contains_key(&many) {
                    problems.push(format!("no section for `{single}` / `{many}`"));
                }
            }
            continue;
        }
        let Some(keys) = docs.get(section) else {
            problems.push(format!("no section headed `{section}`"));
            continue;
        };
        // A key that is a table of its own is documented by its own section.
        let inner = section.trim_matches(|c| c == '[' || c == ']');
        for f in fields.difference(keys) {
            let own = [format!("[{inner}.{f}]"), format!("[[{inner}.{f}]]")];
            if !own.iter().any(|s| docs.contains_key(s)) {
                problems.push(format!("{section}: `{f}` is not documented"));
            }
        }
        for k in keys.difference(&fields) {
            problems.push(format!("{section}: `{k}` is documented but not a key"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/policy.md:\n{}",
        problems.join("\n")
    );
}
