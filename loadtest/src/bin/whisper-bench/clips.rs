//! The clips both servers transcribe, generated from the corpus at run time: the ~64 s
//! passage (real-time factor, WER) and the 4–7 s sentences (throughput).

use std::path::{Path, PathBuf};

use surge_loadtest::speech::{duration_s, synthesize, testdata_dir, Corpus};

use crate::Args;

pub struct Clips {
    pub passage: PathBuf,
    pub passage_s: f64,
    pub passage_ref: PathBuf,
    pub passage_text: String,
    /// (path, seconds, audio bytes)
    pub sentences: Vec<(PathBuf, f64, Vec<u8>)>,
}

pub fn make(args: &Args, dir: &Path) -> Result<Clips, String> {
    let corpus = Corpus::load(&args.corpus.clone().unwrap_or_else(testdata_dir))?;
    let passage = synthesize(&corpus.passage, dir, "passage", &["wav"])?.remove(0);
    let passage_ref = dir.join("passage.txt");
    std::fs::write(&passage_ref, &corpus.passage).map_err(|e| e.to_string())?;
    let mut sentences = Vec::new();
    for (i, s) in corpus.sentences.iter().enumerate() {
        let p = synthesize(s, dir, &format!("sentence{}", i + 1), &["wav"])?.remove(0);
        let bytes = std::fs::read(&p).map_err(|e| e.to_string())?;
        sentences.push((p.clone(), duration_s(&p)?, bytes));
    }
    Ok(Clips {
        passage_s: duration_s(&passage)?,
        passage,
        passage_ref,
        passage_text: corpus.passage,
        sentences,
    })
}
