//! Pure-logic tests of the sampler (no model needed).

use super::*;

fn seeded(params: SamplingParams, seed: u64) -> Sampler {
    Sampler::new(SamplingParams {
        seed: Some(seed),
        ..params
    })
    .expect("valid params")
}

fn draw(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<u32> {
    (0..n)
        .map(|_| s.sample(logits).expect("sample").token)
        .collect()
}

#[test]
fn greedy_is_argmax_with_lowest_index_on_ties() {
    let mut s = Sampler::new(SamplingParams::greedy()).expect("params");
    assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]).expect("sample").token, 1);
    let mut s = Sampler::new(SamplingParams::greedy()).expect("params");
    assert_eq!(s.sample(&[f32::NAN, 0.5, 0.2]).expect("sample").token, 1);
}

#[test]
fn same_seed_same_tokens() {
    let logits: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32) / 20.0).collect();
    let p = SamplingParams {
        temperature: 1.3,
        top_p: 0.9,
        ..SamplingParams::default()
    };
    let a = draw(&mut seeded(p.clone(), 7), &logits, 50);
    let b = draw(&mut seeded(p.clone(), 7), &logits, 50);
    let c = draw(&mut seeded(p, 8), &logits, 50);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn temperature_one_follows_the_distribution() {
    let probs = [0.7f32, 0.2, 0.1];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln() + 5.0).collect();
    let mut s = seeded(SamplingParams::default(), 1);
    let n = 20_000;
    let mut counts = [0usize; 3];
    for t in draw(&mut s, &logits, n) {
        counts[t as usize] += 1;
    }
    for (c, p) in counts.iter().zip(probs) {
        assert!((*c as f32 / n as f32 - p).abs() < 0.02, "{counts:?}");
    }
}

#[test]
fn top_k_and_top_p_restrict_candidates() {
    // probabilities ~0.5, 0.3, 0.1, 0.1 at T=1
    let logits: Vec<f32> = [0.5f32, 0.3, 0.1, 0.1].iter().map(|p| p.ln()).collect();
    let mut s = seeded(
        SamplingParams {
            top_k: 1,
            temperature: 5.0,
            ..SamplingParams::default()
        },
        3,
    );
    assert!(draw(&mut s, &logits, 200).iter().all(|&t| t == 0));

    let mut s = seeded(
        SamplingParams {
            top_p: 0.75,
            ..SamplingParams::default()
        },
        3,
    );
    let toks = draw(&mut s, &logits, 2000);
    assert!(toks.iter().all(|&t| t <= 1), "nucleus is {{0, 1}}");
    assert!(toks.contains(&1));

    let mut s = seeded(
        SamplingParams {
            top_k: 3,
            top_p: 0.9,
            ..SamplingParams::default()
        },
        3,
    );
    // Within the top 3 (mass 0.9) the top two hold 0.8 / 0.9 = 89% < 90%,
    // so the nucleus needs all three.
    let toks = draw(&mut s, &logits, 4000);
    assert!(toks.iter().all(|&t| t <= 2) && toks.contains(&2));
}

#[test]
fn nucleus_widening_on_a_flat_large_vocabulary() {
    // Flat logits: the nucleus of 0.5 spans half of 10k tokens, beyond the
    // first partial selections.
    let logits = vec![0.0f32; 10_000];
    let mut s = seeded(
        SamplingParams {
            top_p: 0.5,
            ..SamplingParams::default()
        },
        11,
    );
    let toks = draw(&mut s, &logits, 500);
    assert!(toks.iter().all(|&t| t < 5001));
    assert!(toks.iter().any(|&t| t > 1000));
}

#[test]
fn presence_and_frequency_penalties() {
    let logits = [1.0f32, 0.9, 0.0];
    let mut s = Sampler::new(SamplingParams {
        temperature: 0.0,
        presence_penalty: 0.5,
        ..SamplingParams::default()
    })
    .expect("params");
    // 0, then 0 is penalised below 1, then both penalised once: 0 again.
    assert_eq!(draw(&mut s, &logits, 3), vec![0, 1, 0]);

    let mut s = Sampler::new(SamplingParams {
        temperature: 0.0,
        frequency_penalty: 0.4,
        ..SamplingParams::default()
    })
    .expect("params");
    // Frequency grows per occurrence: 0 (1.0), 1 (0.9 vs 0.6), 0 (0.6 vs 0.5),
    // 1 (0.2 vs 0.5), 0 (0.2 vs 0.1).
    assert_eq!(draw(&mut s, &logits, 5), vec![0, 1, 0, 1, 0]);
}

#[test]
fn logit_bias_forces_and_bans() {
    let logits = [2.0f32, 1.0, 0.0];
    let mut bias = HashMap::new();
    bias.insert(2, 100.0);
    bias.insert(0, -100.0);
    let mut s = seeded(
        SamplingParams {
            logit_bias: bias,
            ..SamplingParams::default()
        },
        5,
    );
    assert!(draw(&mut s, &logits, 100).iter().all(|&t| t == 2));

    let mut bias = HashMap::new();
    bias.insert(7, 1.0);
    let mut s = seeded(
        SamplingParams {
            logit_bias: bias,
            ..SamplingParams::default()
        },
        5,
    );
    assert!(matches!(
        s.sample(&logits),
        Err(LlmError::InvalidSampling(_))
    ));
}

#[test]
fn logprobs_are_log_softmax_of_processed_logits() {
    let logits = [1.0f32, 3.0, 2.0, -1.0];
    let mut s = Sampler::new(SamplingParams {
        temperature: 0.0,
        logprobs: true,
        top_logprobs: 2,
        ..SamplingParams::default()
    })
    .expect("params");
    let out = s.sample(&logits).expect("sample");
    let lse = logits.iter().map(|x| x.exp()).sum::<f32>().ln();
    assert_eq!(out.token, 1);
    let lp = out.logprob.expect("logprob");
    assert!((lp - (3.0 - lse)).abs() < 1e-5);
    assert_eq!(out.top_logprobs.len(), 2);
    assert_eq!(out.top_logprobs[0].0, 1);
    assert_eq!(out.top_logprobs[1].0, 2);
    assert!((out.top_logprobs[1].1 - (2.0 - lse)).abs() < 1e-5);

    let mut s = Sampler::new(SamplingParams::greedy()).expect("params");
    let out = s.sample(&logits).expect("sample");
    assert_eq!(out.logprob, None);
    assert!(out.top_logprobs.is_empty());
}

#[test]
fn invalid_parameters_are_rejected() {
    for p in [
        SamplingParams {
            temperature: -0.1,
            ..SamplingParams::default()
        },
        SamplingParams {
            top_p: 0.0,
            ..SamplingParams::default()
        },
        SamplingParams {
            top_p: 1.5,
            ..SamplingParams::default()
        },
        SamplingParams {
            presence_penalty: f32::NAN,
            ..SamplingParams::default()
        },
    ] {
        assert!(Sampler::new(p).is_err());
    }
    let mut s = Sampler::new(SamplingParams::default()).expect("params");
    assert!(s.sample(&[f32::NEG_INFINITY; 3]).is_err());
}

#[test]
fn params_deserialize_with_openai_defaults() {
    let p: SamplingParams =
        serde_json::from_str(r#"{"temperature":0.2,"logit_bias":{"5":-100}}"#).expect("json");
    assert_eq!(p.temperature, 0.2);
    assert_eq!(p.top_p, 1.0);
    assert_eq!(p.logit_bias.get(&5), Some(&-100.0));
}
