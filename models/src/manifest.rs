//! The per-model manifest: what a model is and which blobs make it up.
//!
//! Manifests are small JSON files under `manifests/`, one per model, written atomically.
//! Blobs are content-addressed, so two models sharing a file share its blob.

use serde::{Deserialize, Serialize};

/// What kind of worker serves the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Llm,
    Whisper,
}

/// On-disk weight format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Gguf,
    Ct2,
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Llm => "llm",
            ModelKind::Whisper => "whisper",
        })
    }
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Ct2 => "ct2",
        })
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "llm" => Ok(ModelKind::Llm),
            "whisper" => Ok(ModelKind::Whisper),
            _ => Err(format!("unknown kind '{s}' (expected llm or whisper)")),
        }
    }
}

impl std::str::FromStr for ModelFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gguf" => Ok(ModelFormat::Gguf),
            "ct2" => Ok(ModelFormat::Ct2),
            _ => Err(format!("unknown format '{s}' (expected gguf or ct2)")),
        }
    }
}

/// One file of a model: its name as the worker expects it, and the blob holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// Per-model defaults a worker applies unless the request or config says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDefaults {
    /// Context length to serve with, when smaller than the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
    /// Jinja chat template overriding the one embedded in the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub kind: ModelKind,
    pub format: ModelFormat,
    pub files: Vec<FileEntry>,
    /// The spec it came from (`pypi:…`, `hf:…`, `local:…`), for `ls` and re-pulls.
    pub source: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub defaults: ModelDefaults,
    /// Network architecture when known (an LLM's GGUF `general.architecture`: `llama`,
    /// `qwen2`, `gemma3`…; `whisper`), so a worker can refuse one its engine does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
}

impl Manifest {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|a| a == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_through_json() {
        let m = Manifest {
            name: "m".into(),
            kind: ModelKind::Whisper,
            format: ModelFormat::Ct2,
            files: vec![FileEntry {
                name: "model.bin".into(),
                size: 3,
                sha256: "ab".into(),
            }],
            source: "local:/x".into(),
            aliases: vec!["whisper-1".into()],
            defaults: ModelDefaults::default(),
            architecture: None,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"kind\":\"whisper\""));
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), m);
        assert!(
            !text.contains("architecture"),
            "absent stays absent: {text}"
        );
        let with_arch = Manifest {
            architecture: Some("qwen2".into()),
            ..m.clone()
        };
        let text = serde_json::to_string(&with_arch).unwrap();
        assert!(text.contains("\"architecture\":\"qwen2\""));
        assert_eq!(serde_json::from_str::<Manifest>(&text).unwrap(), with_arch);
        assert!(m.answers_to("whisper-1") && m.answers_to("m") && !m.answers_to("x"));
    }
}
