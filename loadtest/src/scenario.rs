//! The scenario file (TOML): target, arrival schedule, request classes with weights,
//! limits and SLO thresholds. Every table denies unknown keys, so a typo is an error that
//! names the key instead of a silently different experiment.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dist::LengthDist;
use crate::schedule::{Profile, Spacing, Spike};

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: Option<String>,
    /// Base URL of the OpenAI-compatible server, without `/v1` (`--target` overrides).
    pub target: Option<String>,
    /// Seeds arrivals (Poisson), class choice and lengths: the same file replays the
    /// same traffic.
    #[serde(default)]
    pub seed: u64,
    /// Per-request timeout in seconds, from the actual send.
    #[serde(default = "default_timeout")]
    pub timeout: f64,
    /// Default `Authorization: Bearer` key for every class (a class may set its own).
    pub api_key: Option<String>,
    /// Like `api_key`, read from this environment variable.
    pub api_key_env: Option<String>,
    /// SLO assertions checked after the run (same syntax as `--fail-on`).
    #[serde(default)]
    pub fail_on: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    pub schedule: ScheduleSpec,
    /// Per-request thresholds for goodput.
    #[serde(default)]
    pub slo: Slo,
    #[serde(rename = "class")]
    pub classes: Vec<ClassSpec>,
}

fn default_timeout() -> f64 {
    60.0
}

/// Hard bounds; `--max-requests` / `--max-duration` override the first two.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// At most this many requests are sent (default 10 000).
    pub max_requests: Option<usize>,
    /// Wall-clock cap in seconds for the whole run, draining included (default: the
    /// schedule's length plus the request timeout). Requests still running then are
    /// cancelled and counted as errors.
    pub max_duration: Option<f64>,
    /// Open loop: arrivals finding this many requests in flight are dropped and counted
    /// (default 1024), so a dead server cannot make the client exhaust its sockets.
    pub max_in_flight: Option<usize>,
}

/// `[schedule]`, by `kind`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleSpec {
    /// A flat rate; uniform spacing unless `arrivals = "poisson"`.
    Constant {
        rps: f64,
        duration: f64,
        arrivals: Option<Spacing>,
    },
    /// A flat rate with Poisson arrivals.
    Poisson { rps: f64, duration: f64 },
    /// Flat steps back to back.
    Steps {
        steps: Vec<StepSpec>,
        arrivals: Option<Spacing>,
    },
    /// baseline → ramp → spike (hold) → ramp_down → recovery.
    Spike {
        baseline_rps: f64,
        multiplier: f64,
        #[serde(default)]
        baseline: f64,
        #[serde(default)]
        ramp: f64,
        hold: f64,
        #[serde(default)]
        ramp_down: f64,
        #[serde(default)]
        recovery: f64,
        arrivals: Option<Spacing>,
    },
    /// Closed loop: `users` each send, wait for the answer, think, repeat.
    Closed {
        users: usize,
        duration: f64,
        #[serde(default)]
        think_time: f64,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub rps: f64,
    pub duration: f64,
    pub name: Option<String>,
}

/// Per-request thresholds (seconds): a request is *good* when it succeeded and met every
/// threshold that applies to it (TTFT and mean inter-token latency only to streams).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    pub ttft: Option<f64>,
    /// Mean inter-token latency of the request (time per output token after the first).
    pub itl: Option<f64>,
    pub e2e: Option<f64>,
}

impl Slo {
    /// `self` with `over`'s thresholds where it sets them.
    pub fn merged(self, over: Slo) -> Slo {
        Slo {
            ttft: over.ttft.or(self.ttft),
            itl: over.itl.or(self.itl),
            e2e: over.e2e.or(self.e2e),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassKind {
    Chat,
    Transcription,
}

/// One `[[class]]`: a kind of request and its share of the traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    pub name: String,
    pub kind: ClassKind,
    /// Relative share of arrivals (default 1).
    #[serde(default = "default_weight")]
    pub weight: f64,
    pub model: String,
    pub api_key: Option<String>,
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub slo: Slo,
    // chat
    pub stream: Option<bool>,
    /// Approximate prompt length in tokens (filler words, ~1 token each).
    pub prompt_tokens: Option<LengthDist>,
    /// A fixed user message instead of generated filler (a unique prefix is still added).
    pub prompt: Option<String>,
    pub system: Option<String>,
    pub max_tokens: Option<LengthDist>,
    pub temperature: Option<f64>,
    /// vLLM's extension (surge honours it): generate exactly `max_tokens`.
    pub ignore_eos: Option<bool>,
    // transcription
    /// Audio files, relative to the scenario file; sent in turn.
    pub files: Option<Vec<PathBuf>>,
    pub response_format: Option<String>,
}

fn default_weight() -> f64 {
    1.0
}

/// A class ready to send.
#[derive(Debug, Clone)]
pub struct Class {
    pub name: String,
    pub weight: f64,
    pub model: String,
    pub api_key: Option<String>,
    pub slo: Slo,
    pub body: ClassBody,
}

#[derive(Debug, Clone)]
pub enum ClassBody {
    Chat {
        stream: bool,
        prompt_tokens: LengthDist,
        prompt: Option<String>,
        system: Option<String>,
        max_tokens: LengthDist,
        temperature: f64,
        ignore_eos: bool,
    },
    Transcription {
        /// (file name, bytes), read once at load.
        files: Vec<(String, Arc<Vec<u8>>)>,
        response_format: String,
    },
}

impl Scenario {
    /// Parses TOML; `dir` resolves relative audio paths (the scenario file's directory).
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let s: Scenario = toml::from_str(text).map_err(|e| e.to_string())?;
        s.validate()?;
        Ok(s)
    }

    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Scenario::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks values that the types cannot (rates, durations, which keys fit the kind).
    pub fn validate(&self) -> Result<(), String> {
        if self.timeout.is_nan() || self.timeout <= 0.0 {
            return Err("timeout must be > 0".into());
        }
        if self.limits.max_requests == Some(0) {
            return Err("limits.max_requests must be >= 1".into());
        }
        if let Some(d) = self.limits.max_duration {
            if d.is_nan() || d <= 0.0 {
                return Err("limits.max_duration must be > 0".into());
            }
        }
        let nonneg = |what: &str, x: f64| {
            if x >= 0.0 && x.is_finite() {
                Ok(())
            } else {
                Err(format!("schedule.{what} must be >= 0, got {x}"))
            }
        };
        match &self.schedule {
            ScheduleSpec::Constant { rps, duration, .. }
            | ScheduleSpec::Poisson { rps, duration } => {
                nonneg("rps", *rps)?;
                nonneg("duration", *duration)?;
            }
            ScheduleSpec::Steps { steps, .. } => {
                if steps.is_empty() {
                    return Err("schedule.steps is empty".into());
                }
                for s in steps {
                    nonneg("steps.rps", s.rps)?;
                    nonneg("steps.duration", s.duration)?;
                }
            }
            ScheduleSpec::Spike {
                baseline_rps,
                multiplier,
                baseline,
                ramp,
                hold,
                ramp_down,
                recovery,
                ..
            } => {
                for (k, v) in [
                    ("baseline_rps", baseline_rps),
                    ("multiplier", multiplier),
                    ("baseline", baseline),
                    ("ramp", ramp),
                    ("hold", hold),
                    ("ramp_down", ramp_down),
                    ("recovery", recovery),
                ] {
                    nonneg(k, *v)?;
                }
            }
            ScheduleSpec::Closed {
                users,
                duration,
                think_time,
            } => {
                if *users == 0 {
                    return Err("schedule.users must be >= 1".into());
                }
                nonneg("duration", *duration)?;
                nonneg("think_time", *think_time)?;
            }
        }
        if self.classes.is_empty() {
            return Err("no [[class]]: add at least one request class".into());
        }
        let mut names = std::collections::HashSet::new();
        for c in &self.classes {
            if !names.insert(c.name.as_str()) {
                return Err(format!("two classes are named {:?}", c.name));
            }
            c.validate()
                .map_err(|e| format!("class {:?}: {e}", c.name))?;
        }
        if self.classes.iter().map(|c| c.weight).sum::<f64>() <= 0.0 {
            return Err("the class weights sum to 0".into());
        }
        Ok(())
    }

    /// The open-loop profile, or `None` for a closed loop.
    pub fn profile(&self) -> Option<Profile> {
        let sp = |a: &Option<Spacing>| a.unwrap_or(Spacing::Uniform);
        Some(match &self.schedule {
            ScheduleSpec::Constant {
                rps,
                duration,
                arrivals,
            } => Profile::constant("constant", *rps, *duration, sp(arrivals)),
            ScheduleSpec::Poisson { rps, duration } => {
                Profile::constant("poisson", *rps, *duration, Spacing::Poisson)
            }
            ScheduleSpec::Steps { steps, arrivals } => {
                let steps: Vec<(String, f64, f64)> = steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let name = s.name.clone().unwrap_or(format!("step{}", i + 1));
                        (name, s.rps, s.duration)
                    })
                    .collect();
                Profile::steps(&steps, sp(arrivals))
            }
            ScheduleSpec::Spike {
                baseline_rps,
                multiplier,
                baseline,
                ramp,
                hold,
                ramp_down,
                recovery,
                arrivals,
            } => Profile::spike(
                &Spike {
                    baseline_rps: *baseline_rps,
                    multiplier: *multiplier,
                    baseline: *baseline,
                    ramp: *ramp,
                    hold: *hold,
                    ramp_down: *ramp_down,
                    recovery: *recovery,
                },
                sp(arrivals),
            ),
            ScheduleSpec::Closed { .. } => return None,
        })
    }

    /// How long requests are sent for.
    pub fn schedule_duration(&self) -> f64 {
        match (&self.schedule, self.profile()) {
            (ScheduleSpec::Closed { duration, .. }, _) => *duration,
            (_, Some(p)) => p.duration(),
            _ => 0.0,
        }
    }

    /// The classes with keys resolved and audio read; `dir` anchors relative file paths.
    pub fn resolve_classes(&self, dir: &Path) -> Result<Vec<Class>, String> {
        let default_key = key(&self.api_key, &self.api_key_env)?;
        self.classes
            .iter()
            .map(|c| {
                let api_key = key(&c.api_key, &c.api_key_env)?.or(default_key.clone());
                let body = match c.kind {
                    ClassKind::Chat => ClassBody::Chat {
                        stream: c.stream.unwrap_or(false),
                        prompt_tokens: c.prompt_tokens.clone().unwrap_or(LengthDist::fixed(32)),
                        prompt: c.prompt.clone(),
                        system: c.system.clone(),
                        max_tokens: c.max_tokens.clone().unwrap_or(LengthDist::fixed(32)),
                        temperature: c.temperature.unwrap_or(0.0),
                        ignore_eos: c.ignore_eos.unwrap_or(false),
                    },
                    ClassKind::Transcription => {
                        let files = c
                            .files
                            .iter()
                            .flatten()
                            .map(|f| {
                                let p = dir.join(f);
                                let bytes = std::fs::read(&p).map_err(|e| {
                                    format!("class {:?}: {}: {e}", c.name, p.display())
                                })?;
                                let name = p
                                    .file_name()
                                    .and_then(|n| n.to_str())
                                    .unwrap_or("audio")
                                    .to_string();
                                Ok((name, Arc::new(bytes)))
                            })
                            .collect::<Result<Vec<_>, String>>()?;
                        ClassBody::Transcription {
                            files,
                            response_format: c
                                .response_format
                                .clone()
                                .unwrap_or_else(|| "json".into()),
                        }
                    }
                };
                Ok(Class {
                    name: c.name.clone(),
                    weight: c.weight,
                    model: c.model.clone(),
                    api_key,
                    slo: self.slo.merged(c.slo),
                    body,
                })
            })
            .collect()
    }
}

fn key(value: &Option<String>, env: &Option<String>) -> Result<Option<String>, String> {
    match (value, env) {
        (Some(v), _) => Ok(Some(v.clone())),
        (None, Some(var)) => std::env::var(var)
            .map(Some)
            .map_err(|_| format!("api_key_env: ${var} is not set")),
        (None, None) => Ok(None),
    }
}

impl ClassSpec {
    fn validate(&self) -> Result<(), String> {
        if !(self.weight >= 0.0 && self.weight.is_finite()) {
            return Err(format!("weight must be >= 0, got {}", self.weight));
        }
        let chat_keys = [
            ("stream", self.stream.is_some()),
            ("prompt_tokens", self.prompt_tokens.is_some()),
            ("prompt", self.prompt.is_some()),
            ("system", self.system.is_some()),
            ("max_tokens", self.max_tokens.is_some()),
            ("temperature", self.temperature.is_some()),
            ("ignore_eos", self.ignore_eos.is_some()),
        ];
        let audio_keys = [
            ("files", self.files.is_some()),
            ("response_format", self.response_format.is_some()),
        ];
        let (misplaced, kind) = match self.kind {
            ClassKind::Chat => (audio_keys.iter().find(|k| k.1), "chat"),
            ClassKind::Transcription => (chat_keys.iter().find(|k| k.1), "transcription"),
        };
        if let Some((k, _)) = misplaced {
            return Err(format!("`{k}` does not apply to a {kind} class"));
        }
        match self.kind {
            ClassKind::Chat => {
                for (k, d) in [
                    ("prompt_tokens", &self.prompt_tokens),
                    ("max_tokens", &self.max_tokens),
                ] {
                    if let Some(d) = d {
                        d.validate().map_err(|e| format!("{k}: {e}"))?;
                    }
                }
                if self.prompt.is_some() && self.prompt_tokens.is_some() {
                    return Err("give `prompt` or `prompt_tokens`, not both".into());
                }
            }
            ClassKind::Transcription => {
                if self.files.as_ref().is_none_or(Vec::is_empty) {
                    return Err("a transcription class needs `files`".into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
target = "http://127.0.0.1:8080"
[schedule]
kind = "constant"
rps = 2
duration = 3
[[class]]
name = "chat"
kind = "chat"
model = "smollm2"
"#;

    #[test]
    fn minimal_scenario_and_defaults() {
        let s = Scenario::parse(MIN).unwrap();
        assert_eq!(s.timeout, 60.0);
        assert_eq!(s.schedule_duration(), 3.0);
        let p = s.profile().unwrap();
        assert_eq!(p.arrivals(0, 100).len(), 6);
        let c = s.resolve_classes(Path::new(".")).unwrap();
        assert!(matches!(c[0].body, ClassBody::Chat { stream: false, .. }));
    }

    fn err(text: &str) -> String {
        Scenario::parse(text).unwrap_err()
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(&format!("tagret = \"x\"\n{MIN}"));
        assert!(e.contains("tagret"), "{e}");
        for (bad, key) in [
            ("[limits]\nmax_request = 3\n", "max_request"),
            ("[slo]\nttft_p95 = 3\n", "ttft_p95"),
        ] {
            let e = err(&format!("{MIN}{bad}"));
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = err(&MIN.replace("rps = 2", "rps = 2\nrsp = 3"));
        assert!(e.contains("rsp"), "{e}");
        let e = err(&MIN.replace("model = \"smollm2\"", "model = \"smollm2\"\nstreem = true"));
        assert!(e.contains("streem"), "{e}");
        let e = err(&MIN.replace("\"constant\"", "\"sawtooth\""));
        assert!(e.contains("sawtooth"), "{e}");
    }

    #[test]
    fn keys_must_fit_the_class_kind() {
        let e = err(&MIN.replace("model = \"smollm2\"", "model = \"m\"\nfiles = [\"a.wav\"]"));
        assert!(e.contains("`files` does not apply to a chat class"), "{e}");
        let e = err(&MIN.replace("kind = \"chat\"", "kind = \"transcription\""));
        assert!(e.contains("needs `files`"), "{e}");
        let e = err(&MIN.replace("rps = 2", "rps = -2"));
        assert!(e.contains("rps"), "{e}");
        // Audio files are read when classes are resolved; a missing one is named.
        let s = Scenario::parse(&MIN.replace(
            "kind = \"chat\"",
            "kind = \"transcription\"\nfiles = [\"nope.wav\"]",
        ))
        .unwrap();
        let e = s.resolve_classes(Path::new("/nonexistent")).unwrap_err();
        assert!(e.contains("nope.wav"), "{e}");
    }

    #[test]
    fn spike_schedule_and_slo_merge() {
        let s = Scenario::parse(&MIN.replace(
            "kind = \"constant\"\nrps = 2\nduration = 3",
            "kind = \"spike\"\nbaseline_rps = 1\nmultiplier = 10\nbaseline = 2\nramp = 1\nhold = 2\nrecovery = 2",
        ).replace("[[class]]", "[slo]\nttft = 2.0\ne2e = 9\n[[class]]\nslo = { ttft = 1.0 }"))
        .unwrap();
        let p = s.profile().unwrap();
        let names: Vec<&str> = p.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["baseline", "ramp", "spike", "recovery"]);
        assert_eq!(s.schedule_duration(), 7.0);
        let c = s.resolve_classes(Path::new(".")).unwrap();
        assert_eq!(
            c[0].slo,
            Slo {
                ttft: Some(1.0),
                itl: None,
                e2e: Some(9.0)
            }
        );
    }
}
