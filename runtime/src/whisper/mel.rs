//! Whisper's log-mel spectrogram, computed the way OpenAI's `log_mel_spectrogram` does.
//!
//! We do not use candle's `audio::pcm_to_mel`: it needs reflect padding and ×0.5
//! filters bolted on to match, and it pads extra windows of silence. This follows the
//! reference directly (`torch.stft(center=True, reflect)`, periodic Hann, power
//! spectrum, Slaney mel filters, `log10`, clamp to max−8, `(x+4)/4`), and runs the DFT
//! and the filter bank as two matmuls so candle's GEMM does the heavy lifting.
//! The mel filters are computed (librosa's Slaney formula) instead of shipped.

use candle_core::{Device, Tensor};

use super::Result;

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
/// Samples and frames in one 30 s window.
pub const N_SAMPLES: usize = 30 * SAMPLE_RATE;
pub const N_FRAMES: usize = N_SAMPLES / HOP;

/// Slaney-scale mel (librosa `hz_to_mel(htk=False)`): linear below 1 kHz, log above.
fn hz_to_mel(f: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= 1000.0 {
        1000.0 / f_sp + (f / 1000.0).ln() / logstep
    } else {
        f / f_sp
    }
}

fn mel_to_hz(m: f64) -> f64 {
    let f_sp = 200.0 / 3.0;
    let logstep = 6.4f64.ln() / 27.0;
    let min_log_mel = 1000.0 / f_sp;
    if m >= min_log_mel {
        1000.0 * (logstep * (m - min_log_mel)).exp()
    } else {
        m * f_sp
    }
}

/// `librosa.filters.mel(sr, n_fft, n_mels, norm="slaney")`: `[n_mels, n_fft/2+1]`,
/// row-major. Matches the `mel_filters.npz` OpenAI ships to ~1e-7.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let n_bins = N_FFT / 2 + 1;
    let fft_freq = |k: usize| k as f64 * SAMPLE_RATE as f64 / N_FFT as f64;
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE as f64 / 2.0));
    let pts: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut w = vec![0f32; n_mels * n_bins];
    for m in 0..n_mels {
        let enorm = 2.0 / (pts[m + 2] - pts[m]);
        for k in 0..n_bins {
            let f = fft_freq(k);
            let lower = (f - pts[m]) / (pts[m + 1] - pts[m]);
            let upper = (pts[m + 2] - f) / (pts[m + 2] - pts[m + 1]);
            w[m * n_bins + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    w
}

/// Precomputed DFT basis and filter bank; build once per engine.
pub struct MelExtractor {
    /// `[N_FFT, 2·n_bins]`: Hann-windowed cos | −sin columns.
    basis: Tensor,
    /// `[n_bins, n_mels]`.
    filters_t: Tensor,
    n_bins: usize,
    n_mels: usize,
    device: Device,
}

impl MelExtractor {
    pub fn new(n_mels: usize, device: &Device) -> Result<Self> {
        let n_bins = N_FFT / 2 + 1;
        let hann: Vec<f64> = (0..N_FFT)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos())
            .collect();
        let mut basis = vec![0f32; N_FFT * 2 * n_bins];
        for (n, &h) in hann.iter().enumerate() {
            for k in 0..n_bins {
                // Reduce the phase index mod N_FFT so the angle stays small and exact.
                let ph = 2.0 * std::f64::consts::PI * ((n * k) % N_FFT) as f64 / N_FFT as f64;
                basis[n * 2 * n_bins + k] = (h * ph.cos()) as f32;
                basis[n * 2 * n_bins + n_bins + k] = (-h * ph.sin()) as f32;
            }
        }
        let basis = Tensor::from_vec(basis, (N_FFT, 2 * n_bins), device)?;
        let filters = Tensor::from_vec(mel_filters(n_mels), (n_mels, n_bins), device)?;
        Ok(Self {
            basis,
            filters_t: filters.t()?.contiguous()?,
            n_bins,
            n_mels,
            device: device.clone(),
        })
    }

    /// Log-mel of a whole recording followed by 30 s of silence, as Whisper's
    /// `transcribe` computes it (`padding=N_SAMPLES`), so every 30 s window starting
    /// inside the audio exists. `[n_mels, frames]` row-major, `frames = len/HOP + 3000`;
    /// the first `len/HOP` frames are content. Normalised over the whole recording.
    pub fn full(&self, pcm: &[f32]) -> Result<LogMel> {
        let mut x = Vec::with_capacity(pcm.len() + N_SAMPLES);
        x.extend_from_slice(pcm);
        x.resize(pcm.len() + N_SAMPLES, 0.0);
        let data = self.log_mel(&x)?;
        Ok(LogMel {
            frames: data.len() / self.n_mels,
            content_frames: pcm.len() / HOP,
            n_mels: self.n_mels,
            data,
        })
    }

    /// `[n_mels, len/HOP]` row-major log-mel of `x` (len ≥ N_FFT).
    fn log_mel(&self, x: &[f32]) -> Result<Vec<f32>> {
        let n = x.len();
        // center=True: reflect-pad N_FFT/2 each side (torch's "reflect" excludes the edge).
        let pad = N_FFT / 2;
        let mut padded = Vec::with_capacity(n + 2 * pad);
        padded.extend((1..=pad).rev().map(|i| x[i]));
        padded.extend_from_slice(x);
        padded.extend((1..=pad).map(|i| x[n - 1 - i]));
        // torch.stft gives n/HOP + 1 frames; Whisper drops the last one.
        let n_frames = n / HOP;
        let mut frames = vec![0f32; n_frames * N_FFT];
        for (t, row) in frames.chunks_exact_mut(N_FFT).enumerate() {
            row.copy_from_slice(&padded[t * HOP..t * HOP + N_FFT]);
        }
        let frames = Tensor::from_vec(frames, (n_frames, N_FFT), &self.device)?;
        let spec = frames.matmul(&self.basis)?; // [T, 2·bins]
        let re = spec.narrow(1, 0, self.n_bins)?;
        let im = spec.narrow(1, self.n_bins, self.n_bins)?;
        let power = (re.sqr()? + im.sqr()?)?;
        let mel = power.matmul(&self.filters_t)?; // [T, n_mels]
        let log = mel
            .clamp(1e-10f32, f32::MAX)?
            .log()?
            .affine(1.0 / 10f64.ln(), 0.0)?;
        let max = log.max_all()?.to_scalar::<f32>()?;
        let log = log.clamp(max - 8.0, f32::MAX)?.affine(0.25, 1.0)?;
        Ok(log.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// A recording's log-mel (see [`MelExtractor::full`]).
pub struct LogMel {
    pub data: Vec<f32>,
    pub n_mels: usize,
    pub frames: usize,
    pub content_frames: usize,
}

impl LogMel {
    /// The 3000-frame window starting at frame `seek`, `[n_mels, 3000]`; frames past
    /// the end (only possible for `seek` beyond the content) are silence-padded.
    pub fn window(&self, seek: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.n_mels * N_FRAMES];
        let take = N_FRAMES.min(self.frames.saturating_sub(seek));
        for (m, dst) in out.chunks_exact_mut(N_FRAMES).enumerate() {
            let row = &self.data[m * self.frames..(m + 1) * self.frames];
            dst[..take].copy_from_slice(&row[seek..seek + take]);
            // Past the padded end: the value of silence (the last frame is silence).
            let fill = row[self.frames - 1];
            dst[take..].iter_mut().for_each(|v| *v = fill);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_filters_have_known_shape() {
        let f = mel_filters(80);
        assert_eq!(f.len(), 80 * 201);
        // Bin 0 (DC) is outside every triangle except the first's left edge (0 weight).
        assert_eq!(f[0], 0.0);
        // Hand-computed: filter 0 spans 0–74.5 Hz peaking at 37.2 Hz; bin 1 is 40 Hz,
        // so 2/74.5 Hz × (74.5−40)/37.2 ≈ 0.0249. The top filter ends below 8 kHz.
        assert!((f[1] - 0.0249).abs() < 2e-4, "{}", f[1]);
        assert!(f[79 * 201 + 200].abs() < 1e-6);
    }

    /// Reference values from faster-whisper 1.2.1's numpy feature extractor (the
    /// OpenAI algorithm) on the same formula-made signal, padded with 30 s of silence
    /// as `transcribe` does; computed once, recorded here.
    #[test]
    fn log_mel_matches_reference_extractor() {
        let x: Vec<f32> = (0..32_000)
            .map(|n| {
                let t = n as f64 / 16_000.0;
                let tau = 2.0 * std::f64::consts::PI;
                let v = 0.5 * (tau * 440.0 * t).sin()
                    + 0.25 * (tau * (200.0 + 1500.0 * t) * t).sin()
                    + if t < 1.0 {
                        0.1 * (tau * 3000.0 * t).sin()
                    } else {
                        0.0
                    };
                v as f32
            })
            .collect();
        let m = MelExtractor::new(80, &Device::Cpu).unwrap();
        let mel = m.full(&x).unwrap();
        assert_eq!((mel.frames, mel.content_frames), (3200, 200));
        let at = |bin: usize, frame: usize| mel.data[bin * mel.frames + frame];
        let points = [
            (0, 0, 1.15297),
            (5, 10, -0.15846),
            (10, 50, 1.34874),
            (20, 100, 0.05310),
            (30, 150, -0.53460),
            (40, 199, -0.30202),
            (50, 75, 1.07900),
            (60, 120, 1.10224),
            (70, 30, -0.53460),
            (79, 180, -0.53460),
            (12, 0, 1.34675),
            (25, 199, 0.01458),
        ];
        for (bin, frame, want) in points {
            let got = at(bin, frame);
            assert!(
                (got - want).abs() < 2e-4,
                "mel[{bin}][{frame}] = {got}, reference {want}"
            );
        }
        // Per-bin means over the 200 content frames, a few bins from each region.
        for (bin, want) in [
            (0, -0.50390),
            (9, 1.16097),
            (11, 1.43541),
            (54, 0.23480),
            (79, -0.52638),
        ] {
            let mean = (0..200).map(|f| at(bin, f)).sum::<f32>() / 200.0;
            assert!(
                (mean - want).abs() < 2e-4,
                "bin {bin} mean {mean}, reference {want}"
            );
        }
    }

    #[test]
    fn silence_is_flat() {
        let m = MelExtractor::new(80, &Device::Cpu).unwrap();
        let mel = m.full(&[0.0; 1600]).unwrap();
        let v = mel.window(0);
        assert_eq!(v.len(), 80 * N_FRAMES);
        assert!(v.iter().all(|&x| (x - v[0]).abs() < 1e-6));
    }
}
