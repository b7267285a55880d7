//! Maps a CTranslate2 Whisper spec onto candle-transformers' `Whisper`.
//!
//! candle's model loads through a `VarBuilder` keyed by the Hugging Face names
//! (`model.encoder.layers.0.self_attn.q_proj.weight`, …). CTranslate2 stores the same
//! weights under its own names and fuses some of them, so we rename and split here
//! and feed `VarBuilder::from_tensors`; no copy of the checkpoint is written anywhere.
//!
//! - self-attention `linear_0` is fused Q|K|V (3·d rows): split by `narrow`;
//! - decoder cross-attention `linear_0` is Q, `linear_1` fused K|V, `linear_2` the output;
//! - candle's key projections have no bias (CT2 stores zeros there), so it is dropped;
//! - the output projection is an alias of the token embedding, which is exactly what
//!   candle's `final_linear` uses, so nothing extra is needed;
//! - the encoder's sinusoidal positions are recomputed by candle; the decoder's learned
//!   positions come from `decoder/position_encodings/encodings`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::whisper::{model::Whisper, Config};
use serde::Deserialize;

use super::ct2::Ct2Model;
use super::{Result, WhisperError};

/// The parts of a CT2 Whisper `config.json` decoding needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Ct2Config {
    /// Tokens never to emit (OpenAI's `suppress_tokens`).
    #[serde(default)]
    pub suppress_ids: Vec<u32>,
    /// Tokens not to emit as the first sampled token (blank, EOT).
    #[serde(default)]
    pub suppress_ids_begin: Vec<u32>,
}

impl Ct2Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| WhisperError::Load(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| WhisperError::Load(format!("{}: {e}", path.display())))
    }
}

/// Loads `model.bin` (+ `config.json`) into candle's Whisper on `device`.
///
/// Dimensions come from the tensors themselves rather than a table of known models,
/// so any CT2 Whisper size (tiny … large) without quantization loads the same way.
pub fn load_model(model_bin: &Path, config_json: &Path, device: &Device) -> Result<LoadedModel> {
    let ct2 = Ct2Model::load(model_bin, device)?;
    if ct2.spec != "WhisperSpec" {
        return Err(WhisperError::Load(format!(
            "expected a WhisperSpec model, found {}",
            ct2.spec
        )));
    }
    let extra = Ct2Config::load(config_json)?;
    let config = derive_config(&ct2, &extra)?;
    let tensors = rename(&ct2, &config)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    let model = Whisper::load(&vb, config)?;
    Ok(LoadedModel { model, extra })
}

/// candle's model plus the decoding hints only the CT2 config carries.
pub struct LoadedModel {
    pub model: Whisper,
    pub extra: Ct2Config,
}

fn count_layers(ct2: &Ct2Model, side: &str) -> usize {
    (0..)
        .take_while(|i| {
            let key = format!("{side}/layer_{i}/ffn/linear_0/weight");
            ct2.vars.contains_key(&key)
        })
        .count()
}

fn derive_config(ct2: &Ct2Model, extra: &Ct2Config) -> Result<Config> {
    let (vocab_size, d_model) = ct2.get("decoder/embeddings/weight")?.dims2()?;
    let (_, num_mel_bins, _) = ct2.get("encoder/conv1/weight")?.dims3()?;
    let (max_source_positions, _) = ct2.get("encoder/position_encodings/encodings")?.dims2()?;
    let (max_target_positions, _) = ct2.get("decoder/position_encodings/encodings")?.dims2()?;
    Ok(Config {
        num_mel_bins,
        max_source_positions,
        d_model,
        encoder_attention_heads: ct2.scalar_usize("encoder/num_heads")?,
        encoder_layers: count_layers(ct2, "encoder"),
        vocab_size,
        max_target_positions,
        decoder_attention_heads: ct2.scalar_usize("decoder/num_heads")?,
        decoder_layers: count_layers(ct2, "decoder"),
        suppress_tokens: extra.suppress_ids.clone(),
    })
}

/// Builds the candle-named tensor map.
fn rename(ct2: &Ct2Model, cfg: &Config) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    let mut put = |to: String, t: &Tensor| {
        out.insert(to, t.clone());
    };
    // Linear and layer-norm pairs: CT2 (weight|bias, gamma|beta) → candle (weight, bias).
    let linear = |put: &mut dyn FnMut(String, &Tensor), from: &str, to: &str| -> Result<()> {
        put(format!("{to}.weight"), ct2.get(&format!("{from}/weight"))?);
        put(format!("{to}.bias"), ct2.get(&format!("{from}/bias"))?);
        Ok(())
    };
    let norm = |put: &mut dyn FnMut(String, &Tensor), from: &str, to: &str| -> Result<()> {
        put(format!("{to}.weight"), ct2.get(&format!("{from}/gamma"))?);
        put(format!("{to}.bias"), ct2.get(&format!("{from}/beta"))?);
        Ok(())
    };
    // Splits a fused projection into `parts` equal row blocks named by `names`.
    let split = |put: &mut dyn FnMut(String, &Tensor), from: &str, names: &[&str]| -> Result<()> {
        let w = ct2.get(&format!("{from}/weight"))?;
        let b = ct2.get(&format!("{from}/bias"))?;
        let d = w.dim(0)? / names.len();
        for (i, to) in names.iter().enumerate() {
            put(
                format!("{to}.weight"),
                &w.narrow(0, i * d, d)?.contiguous()?,
            );
            if !to.ends_with("k_proj") {
                put(format!("{to}.bias"), &b.narrow(0, i * d, d)?.contiguous()?);
            }
        }
        Ok(())
    };

    let e = "model.encoder";
    linear(&mut put, "encoder/conv1", &format!("{e}.conv1"))?;
    linear(&mut put, "encoder/conv2", &format!("{e}.conv2"))?;
    norm(&mut put, "encoder/layer_norm", &format!("{e}.layer_norm"))?;
    let d = "model.decoder";
    put(
        format!("{d}.embed_tokens.weight"),
        ct2.get("decoder/embeddings/weight")?,
    );
    put(
        format!("{d}.embed_positions.weight"),
        ct2.get("decoder/position_encodings/encodings")?,
    );
    norm(&mut put, "decoder/layer_norm", &format!("{d}.layer_norm"))?;

    let sides = [
        ("encoder", e, cfg.encoder_layers, false),
        ("decoder", d, cfg.decoder_layers, true),
    ];
    for (side, prefix, n_layers, cross) in sides {
        for i in 0..n_layers {
            let from = format!("{side}/layer_{i}");
            let to = format!("{prefix}.layers.{i}");
            let sa = format!("{to}.self_attn");
            let qkv = [
                format!("{sa}.q_proj"),
                format!("{sa}.k_proj"),
                format!("{sa}.v_proj"),
            ];
            let qkv: Vec<&str> = qkv.iter().map(String::as_str).collect();
            split(&mut put, &format!("{from}/self_attention/linear_0"), &qkv)?;
            linear(
                &mut put,
                &format!("{from}/self_attention/linear_1"),
                &format!("{sa}.out_proj"),
            )?;
            norm(
                &mut put,
                &format!("{from}/self_attention/layer_norm"),
                &format!("{to}.self_attn_layer_norm"),
            )?;
            if cross {
                let ca = format!("{to}.encoder_attn");
                linear(
                    &mut put,
                    &format!("{from}/attention/linear_0"),
                    &format!("{ca}.q_proj"),
                )?;
                let kv = [format!("{ca}.k_proj"), format!("{ca}.v_proj")];
                let kv: Vec<&str> = kv.iter().map(String::as_str).collect();
                split(&mut put, &format!("{from}/attention/linear_1"), &kv)?;
                linear(
                    &mut put,
                    &format!("{from}/attention/linear_2"),
                    &format!("{ca}.out_proj"),
                )?;
                norm(
                    &mut put,
                    &format!("{from}/attention/layer_norm"),
                    &format!("{to}.encoder_attn_layer_norm"),
                )?;
            }
            linear(
                &mut put,
                &format!("{from}/ffn/linear_0"),
                &format!("{to}.fc1"),
            )?;
            linear(
                &mut put,
                &format!("{from}/ffn/linear_1"),
                &format!("{to}.fc2"),
            )?;
            norm(
                &mut put,
                &format!("{from}/ffn/layer_norm"),
                &format!("{to}.final_layer_norm"),
            )?;
        }
    }
    Ok(out)
}
