//! Length distributions for prompts and outputs (`max_tokens`), as a scenario writes them:
//! a plain integer (fixed) or a table `{ dist = "uniform" | "normal" | "lognormal", … }`.
//! Real traffic has long-tailed lengths, and the tail is what fills a batch, so a
//! benchmark with one fixed length flatters a server.

use std::fmt;

use rand::Rng;
use rand_distr::{Distribution, LogNormal, Normal};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A distribution of positive integers (token counts).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "dist", rename_all = "lowercase")]
pub enum LengthDist {
    Fixed {
        value: u32,
    },
    /// Every integer in min..=max equally likely.
    Uniform {
        min: u32,
        max: u32,
    },
    /// Normal, rounded and clamped to min..=max.
    Normal {
        mean: f64,
        stddev: f64,
        min: u32,
        max: u32,
    },
    /// Log-normal with this mean and standard deviation *of the lengths* (not of their
    /// logarithm), rounded and clamped to min..=max: the long tail of real prompts.
    Lognormal {
        mean: f64,
        stddev: f64,
        min: u32,
        max: u32,
    },
}

impl LengthDist {
    pub fn fixed(value: u32) -> LengthDist {
        LengthDist::Fixed { value }
    }

    /// Checks the parameters; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let range = |min: u32, max: u32| {
            if min == 0 || min > max {
                Err(format!("needs 1 <= min <= max, got min {min}, max {max}"))
            } else {
                Ok(())
            }
        };
        match *self {
            LengthDist::Fixed { value: 0 } => Err("must be at least 1".into()),
            LengthDist::Fixed { .. } => Ok(()),
            LengthDist::Uniform { min, max } => range(min, max),
            LengthDist::Normal {
                mean,
                stddev,
                min,
                max,
            }
            | LengthDist::Lognormal {
                mean,
                stddev,
                min,
                max,
            } => {
                range(min, max)?;
                if !(mean > 0.0 && mean.is_finite() && stddev >= 0.0 && stddev.is_finite()) {
                    return Err(format!(
                        "needs mean > 0 and stddev >= 0, got {mean}, {stddev}"
                    ));
                }
                Ok(())
            }
        }
    }

    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        let clamp = |x: f64, min: u32, max: u32| x.round().clamp(min as f64, max as f64) as u32;
        match *self {
            LengthDist::Fixed { value } => value,
            LengthDist::Uniform { min, max } => rng.random_range(min..=max),
            LengthDist::Normal {
                mean,
                stddev,
                min,
                max,
            } => match Normal::new(mean, stddev) {
                Ok(d) => clamp(d.sample(rng), min, max),
                Err(_) => clamp(mean, min, max),
            },
            LengthDist::Lognormal {
                mean,
                stddev,
                min,
                max,
            } => {
                let sigma2 = (1.0 + (stddev / mean).powi(2)).ln();
                let mu = mean.ln() - sigma2 / 2.0;
                match LogNormal::new(mu, sigma2.sqrt()) {
                    Ok(d) => clamp(d.sample(rng), min, max),
                    Err(_) => clamp(mean, min, max),
                }
            }
        }
    }
}

/// The table form; `deny_unknown_fields` so a misspelt key is an error naming it.
#[derive(Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
enum Table {
    Fixed {
        value: u32,
    },
    Uniform {
        min: u32,
        max: u32,
    },
    Normal {
        mean: f64,
        stddev: f64,
        #[serde(default = "one")]
        min: u32,
        #[serde(default = "big")]
        max: u32,
    },
    Lognormal {
        mean: f64,
        stddev: f64,
        #[serde(default = "one")]
        min: u32,
        #[serde(default = "big")]
        max: u32,
    },
}

fn one() -> u32 {
    1
}

fn big() -> u32 {
    1 << 20
}

impl<'de> Deserialize<'de> for LengthDist {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LengthDist;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a positive integer or a table with `dist = \"uniform\"` (min, max), \"normal\" or \"lognormal\" (mean, stddev, min, max)")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LengthDist, E> {
                u32::try_from(v)
                    .map(LengthDist::fixed)
                    .map_err(|_| E::custom(format!("length {v} out of range")))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LengthDist, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(-1))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LengthDist, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(match t {
                    Table::Fixed { value } => LengthDist::Fixed { value },
                    Table::Uniform { min, max } => LengthDist::Uniform { min, max },
                    Table::Normal {
                        mean,
                        stddev,
                        min,
                        max,
                    } => LengthDist::Normal {
                        mean,
                        stddev,
                        min,
                        max,
                    },
                    Table::Lognormal {
                        mean,
                        stddev,
                        min,
                        max,
                    } => LengthDist::Lognormal {
                        mean,
                        stddev,
                        min,
                        max,
                    },
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[derive(Deserialize)]
    struct W {
        d: LengthDist,
    }

    fn parse(s: &str) -> Result<LengthDist, String> {
        toml::from_str::<W>(s)
            .map(|w| w.d)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn parses_both_forms_and_names_bad_keys() {
        assert_eq!(parse("d = 64").unwrap(), LengthDist::fixed(64));
        assert_eq!(
            parse("d = { dist = \"uniform\", min = 4, max = 9 }").unwrap(),
            LengthDist::Uniform { min: 4, max: 9 }
        );
        assert_eq!(
            parse("d = { dist = \"lognormal\", mean = 100.0, stddev = 50.0 }").unwrap(),
            LengthDist::Lognormal {
                mean: 100.0,
                stddev: 50.0,
                min: 1,
                max: 1 << 20
            }
        );
        let e = parse("d = { dist = \"uniform\", min = 4, maxx = 9 }").unwrap_err();
        assert!(e.contains("maxx"), "{e}");
        let e = parse("d = { dist = \"zipf\" }").unwrap_err();
        assert!(e.contains("zipf"), "{e}");
        assert!(parse("d = -3").is_err());
        assert!(LengthDist::Uniform { min: 5, max: 2 }.validate().is_err());
        assert!(LengthDist::fixed(0).validate().is_err());
    }

    #[test]
    fn samples_have_the_asked_moments() {
        let mut rng = StdRng::seed_from_u64(3);
        let n = 20_000;
        let mean_of = |d: &LengthDist, rng: &mut StdRng| {
            (0..n).map(|_| d.sample(rng) as f64).sum::<f64>() / n as f64
        };
        let u = LengthDist::Uniform { min: 10, max: 20 };
        assert!((mean_of(&u, &mut rng) - 15.0).abs() < 0.2);
        assert!((0..1000).all(|_| (10..=20).contains(&u.sample(&mut rng))));
        let ln = LengthDist::Lognormal {
            mean: 200.0,
            stddev: 100.0,
            min: 1,
            max: 1 << 20,
        };
        assert!((mean_of(&ln, &mut rng) - 200.0).abs() < 5.0);
        let nr = LengthDist::Normal {
            mean: 50.0,
            stddev: 30.0,
            min: 40,
            max: 60,
        };
        assert!((0..1000).all(|_| (40..=60).contains(&nr.sample(&mut rng))));
    }
}
