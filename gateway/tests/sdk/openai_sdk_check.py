"""OpenAI's own Python SDK against a real `surge serve`: structured outputs with
`chat.completions.parse` (Pydantic models), tool calls with `pydantic_function_tool`
(forced and automatic), a call -> tool result -> next turn round trip, and streamed
tool calls assembled by the SDK's stream helper into the non-streamed call.

Run by gateway/tests/openai_sdk.rs with the python of scripts/peers/openai-sdk.sh.
Prints one line per check; exits non-zero at the first failure.
"""

import argparse
import enum
import json
import sys
from typing import List, Optional

import openai
from pydantic import BaseModel, Field


class Color(str, enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    street: str = Field(max_length=40)
    city: str = Field(max_length=30)


class Person(BaseModel):
    name: str = Field(max_length=40)
    age: int
    favourite_color: Color
    address: Address


class Shopping(BaseModel):
    items: List[str] = Field(max_length=4)
    budget: float
    note: Optional[str] = Field(max_length=40)


class Step(BaseModel):
    explanation: str = Field(max_length=80)
    output: str = Field(max_length=40)


class MathAnswer(BaseModel):
    steps: List[Step] = Field(max_length=3)
    final_answer: str = Field(max_length=40)


SCHEMAS = [
    (Person, "Invent a person who lives in Paris."),
    (Shopping, "Make a short shopping list for a picnic."),
    (MathAnswer, "Solve 8x + 7 = -23 step by step."),
]


# Named as the function: the schema's title is the class name, and small models copy
# a title like "GetWeather" into the function name they call.
class get_weather(BaseModel):  # noqa: N801
    """Get the current weather in a city."""

    city: str = Field(max_length=40)


def check(name, ok, detail=""):
    print(("ok   " if ok else "FAIL ") + name + (": " + detail if detail else ""), flush=True)
    if not ok:
        sys.exit(1)


def structured(client, model):
    for schema, prompt in SCHEMAS:
        for temperature, seed in [(0.0, 0), (0.8, 1), (1.2, 2)]:
            completion = client.chat.completions.parse(
                model=model,
                messages=[{"role": "user", "content": prompt}],
                response_format=schema,
                temperature=temperature,
                seed=seed,
                max_tokens=400,
            )
            msg = completion.choices[0].message
            check(
                f"{model} parse {schema.__name__} t={temperature}",
                isinstance(msg.parsed, schema),
                msg.content or "",
            )


def weather_tools():
    return [openai.pydantic_function_tool(get_weather)]


def tools(client, model):
    messages = [{"role": "user", "content": "What is the weather like in Paris today?"}]
    # Forced: a named function, and `required`, always give a valid call.
    for choice in [{"type": "function", "function": {"name": "get_weather"}}, "required"]:
        for temperature in [0.0, 1.0]:
            completion = client.chat.completions.parse(
                model=model,
                messages=messages,
                tools=weather_tools(),
                tool_choice=choice,
                parallel_tool_calls=False,
                temperature=temperature,
                seed=3,
                max_tokens=100,
            )
            calls = completion.choices[0].message.tool_calls or []
            check(
                f"{model} tool_choice={json.dumps(choice)} t={temperature}",
                len(calls) == 1
                and calls[0].function.name == "get_weather"
                and isinstance(calls[0].function.parsed_arguments, get_weather),
                str(completion.choices[0].message),
            )
    # Automatic, then the round trip: the call and its result go back in the history.
    first = client.chat.completions.create(
        model=model, messages=messages, tools=weather_tools(), temperature=0, max_tokens=100
    )
    call = first.choices[0].message.tool_calls[0]
    args = json.loads(call.function.arguments)
    check(
        f"{model} auto call",
        first.choices[0].finish_reason == "tool_calls" and args.get("city") == "Paris",
        call.function.arguments,
    )
    history = messages + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 degrees Celsius."},
    ]
    second = client.chat.completions.create(
        model=model, messages=history, tools=weather_tools(), temperature=0, max_tokens=60
    )
    reply = second.choices[0].message
    check(f"{model} round trip", reply.content is not None or bool(reply.tool_calls), str(reply))
    # Streamed: the SDK's stream helper assembles the deltas into the same call.
    with client.chat.completions.stream(
        model=model, messages=messages, tools=weather_tools(), temperature=0, max_tokens=100
    ) as stream:
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls or []
    check(
        f"{model} streamed call",
        len(streamed) == 1
        and streamed[0].function.name == call.function.name
        and json.loads(streamed[0].function.arguments) == args,
        str(final.choices[0].message),
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--structured-model", action="append", default=[])
    p.add_argument("--tools-model", action="append", default=[])
    a = p.parse_args()
    client = openai.OpenAI(base_url=a.base_url, api_key="unused", max_retries=0, timeout=300)
    for m in a.structured_model:
        structured(client, m)
    for m in a.tools_model:
        tools(client, m)
    print("all checks passed")


if __name__ == "__main__":
    main()
