//! OpenAI's own Python SDK (pinned by scripts/peers/openai-sdk.sh) against a real
//! `surge serve`: `chat.completions.parse` with Pydantic models on SmolLM2 and
//! Qwen2.5-Coder-0.5B, forced and automatic tool calls with `pydantic_function_tool`,
//! a tool round trip, and streamed tool calls assembled by the SDK's stream helper
//! (gateway/tests/sdk/openai_sdk_check.py holds the checks).

mod support;

use std::process::Command;

use support::gateway::start_gateway;
use support::worker::{ensure_model, LLM};

const QWEN: &str = "qwen2.5-coder-0.5b-instruct";

#[test]
fn the_openai_sdk_parses_structured_outputs_and_tool_calls() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let setup = Command::new(format!("{root}/scripts/peers/openai-sdk.sh"))
        .output()
        .expect("run scripts/peers/openai-sdk.sh");
    assert!(
        setup.status.success(),
        "openai-sdk.sh: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let python = String::from_utf8(setup.stdout).unwrap().trim().to_string();
    ensure_model(QWEN);
    let gw = start_gateway(&[]);
    let out = Command::new(python)
        .arg(format!("{root}/gateway/tests/sdk/openai_sdk_check.py"))
        .args(["--base-url", &gw.url("/v1")])
        .args(["--structured-model", LLM, "--structured-model", QWEN])
        .args(["--tools-model", QWEN])
        .output()
        .expect("run the SDK checks");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all checks passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
