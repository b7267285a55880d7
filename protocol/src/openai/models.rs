//! The model list (`/v1/models`).

use serde::{Deserialize, Serialize};

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    pub data: Vec<Model>,
}

impl ModelList {
    pub fn new(data: Vec<Model>) -> Self {
        ModelList {
            object: "list".into(),
            data,
        }
    }
}

/// One entry of the model list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub id: String,
    /// `model`.
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub owned_by: String,
    /// surge: the canonical name an alias stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// surge: `llm` or `whisper`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl Model {
    pub fn new(id: impl Into<String>, created: u64, owned_by: impl Into<String>) -> Self {
        Model {
            root: None,
            kind: None,
            id: id.into(),
            object: "model".into(),
            created,
            owned_by: owned_by.into(),
        }
    }
}
