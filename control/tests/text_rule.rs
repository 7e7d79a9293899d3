//! The text rule is one rule: the characters the API refuses (`control::text`, a small table)
//! are exactly the characters the dashboard marks as hidden in stored text
//! (`control/assets/lib.js`, the `REFUSED` expression, written with Unicode properties), checked
//! over every Unicode scalar value against the JavaScript engine's own Unicode data (Node's, the
//! same ICU data as Chromium's). Node is on every machine that runs the tests (`wrangler`).

use std::process::Command;

/// The ranges of refused scalar values, as `control::text` decides.
fn rust_ranges() -> Vec<(u32, u32)> {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for c in (0..=0x10FFFF_u32).filter_map(char::from_u32) {
        if control::text::classify(c).is_none() {
            continue;
        }
        let cp = u32::from(c);
        match ranges.last_mut() {
            Some(last) if last.1 + 1 == cp => last.1 = cp,
            _ => ranges.push((cp, cp)),
        }
    }
    ranges
}

/// The `REFUSED` expression of the dashboard's scripts, as written there.
fn dashboard_expression() -> String {
    let lib = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/lib.js"))
        .expect("control/assets/lib.js");
    let line = lib
        .lines()
        .find(|l| l.starts_with("const REFUSED = /"))
        .expect("lib.js defines `const REFUSED = /.../gu;`");
    let body = line
        .trim_start_matches("const REFUSED = /")
        .trim_end_matches(';');
    body.strip_suffix("/gu")
        .expect("REFUSED has the flags gu")
        .to_owned()
}

#[test]
fn the_api_refuses_exactly_what_the_dashboard_marks() {
    let source = dashboard_expression();
    // Surrogates are no scalar values: Rust strings cannot hold them, so they are left out.
    let script = r#"
        const re = new RegExp(process.argv[1], 'u');
        const ranges = [];
        for (let cp = 0; cp <= 0x10FFFF; cp++) {
          if (cp >= 0xD800 && cp <= 0xDFFF) continue;
          if (!re.test(String.fromCodePoint(cp))) continue;
          const last = ranges[ranges.length - 1];
          if (last && last[1] + 1 === cp) last[1] = cp; else ranges.push([cp, cp]);
        }
        console.log(JSON.stringify({ unicode: process.versions.unicode, ranges }));
    "#;
    let output = Command::new("node")
        .args(["-e", script, &source])
        .output()
        .expect("running node (it comes with the test tools: scripts/bootstrap.sh)");
    assert!(
        output.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).expect("node's JSON");
    let js: Vec<(u32, u32)> = answer["ranges"]
        .as_array()
        .expect("ranges")
        .iter()
        .map(|r| {
            let n = |i: usize| u32::try_from(r[i].as_u64().expect("number")).expect("u32");
            (n(0), n(1))
        })
        .collect();
    let rust = rust_ranges();
    let only = |a: &[(u32, u32)], b: &[(u32, u32)]| -> Vec<String> {
        a.iter()
            .filter(|r| !b.contains(r))
            .map(|(f, l)| format!("U+{f:04X}..U+{l:04X}"))
            .collect()
    };
    assert_eq!(
        rust,
        js,
        "the API's table and the dashboard's expression differ (Unicode {} in node):\n\
         only in Rust: {:?}\nonly in JavaScript: {:?}",
        answer["unicode"],
        only(&rust, &js),
        only(&js, &rust),
    );
}

#[test]
fn every_refusal_the_api_reports_is_one_the_table_names() {
    // The problem's fields come from the same table: a refused character is always reported
    // with its code point, category and reason.
    for c in [
        '\u{202E}',
        '\u{200B}',
        '\0',
        '\u{2028}',
        '\u{E0041}',
        '\u{FFFE}',
    ] {
        let refused = control::text::check(&format!("ab{c}")).unwrap_err();
        assert_eq!(refused.index, 2);
        assert_eq!(refused.code_point(), format!("U+{:04X}", u32::from(c)));
        assert!(!refused.category.is_empty());
    }
}
