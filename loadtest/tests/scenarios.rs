//! The scenarios shipped in `loadtest/scenarios/` and the examples in the "Load tester"
//! section of `docs/load-tester.md` parse, so documentation and CI files cannot rot.

use std::path::Path;

use surge_loadtest::failon;
use surge_loadtest::scenario::Scenario;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The "## Load tester" section of `docs/load-tester.md`.
fn readme_section() -> String {
    let readme = std::fs::read_to_string(root().join("docs/load-tester.md")).unwrap();
    let start = readme
        .find("## Load tester")
        .expect("docs/load-tester.md has a Load tester section");
    let rest = &readme[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_string()
}

#[test]
fn readme_scenario_parses_and_is_the_shipped_file() {
    let section = readme_section();
    let start = section.find("```toml\n").expect("a toml block") + 8;
    let len = section[start..].find("```").unwrap();
    let readme = Scenario::parse(&section[start..start + len]).unwrap();
    let file = Scenario::load(&root().join("loadtest/scenarios/spike-10x.toml")).unwrap();
    assert_eq!(format!("{readme:?}"), format!("{file:?}"));
    let p = readme.profile().unwrap();
    let names: Vec<&str> = p.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["baseline", "ramp", "spike", "recovery"]);
}

#[test]
fn readme_fail_on_examples_parse() {
    let section = readme_section();
    let mut n = 0;
    for piece in section.split("--fail-on").skip(1) {
        let piece = piece.trim_start_matches(['\n', ' ']);
        if let Some(rest) = piece.strip_prefix('\'') {
            let expr = &rest[..rest.find('\'').unwrap()];
            failon::parse(expr).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 5, "found {n} examples");
}

#[test]
fn shipped_scenarios_parse() {
    let dir = root().join("loadtest/scenarios");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            for e in &s.fail_on {
                failon::parse(e).unwrap();
            }
            n += 1;
        }
    }
    assert!(n >= 2);
}
