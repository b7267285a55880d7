//! The models the gateway serves: every model in the cache, by name and alias.

use std::collections::HashMap;

use surge_models::{Manifest, ModelCache, ModelKind};
use surge_protocol::openai::{Model, ModelList};

/// One servable model.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub name: String,
    pub kind: ModelKind,
    pub aliases: Vec<String>,
    /// Bytes of weights on disk (for placing workers on GPUs by memory).
    pub size: u64,
}

impl ModelEntry {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ModelKind::Llm => "llm",
            ModelKind::Whisper => "whisper",
        }
    }
}

/// Lookup by any id (name or alias).
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Vec<ModelEntry>,
    by_id: HashMap<String, usize>,
    /// Unix time the registry was built (OpenAI's `created`).
    created: u64,
}

impl Registry {
    /// Every complete model in `cache`.
    pub fn from_cache(cache: &ModelCache) -> surge_models::Result<Self> {
        let manifests: Vec<Manifest> = cache
            .manifests()?
            .into_iter()
            .filter(|m| cache.is_complete(m))
            .collect();
        Ok(Self::from_manifests(&manifests))
    }

    pub fn from_manifests(manifests: &[Manifest]) -> Self {
        let mut r = Registry {
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            ..Default::default()
        };
        for m in manifests {
            let i = r.entries.len();
            r.entries.push(ModelEntry {
                name: m.name.clone(),
                kind: m.kind,
                aliases: m.aliases.clone(),
                size: m.total_size(),
            });
            r.by_id.insert(m.name.clone(), i);
            for a in &m.aliases {
                r.by_id.entry(a.clone()).or_insert(i);
            }
        }
        r
    }

    pub fn resolve(&self, id: &str) -> Option<&ModelEntry> {
        self.by_id.get(id).map(|&i| &self.entries[i])
    }

    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    fn object(&self, id: &str, e: &ModelEntry) -> Model {
        Model {
            root: Some(e.name.clone()),
            kind: Some(e.kind_name().to_string()),
            ..Model::new(id, self.created, "surge")
        }
    }

    /// `GET /v1/models`: every name and alias.
    pub fn list(&self) -> ModelList {
        let mut data = Vec::new();
        for e in &self.entries {
            data.push(self.object(&e.name, e));
            for a in &e.aliases {
                data.push(self.object(a, e));
            }
        }
        ModelList::new(data)
    }

    /// `GET /v1/models/{id}`.
    pub fn model(&self, id: &str) -> Option<Model> {
        self.resolve(id).map(|e| self.object(id, e))
    }
}
