"""The OpenAI wire protocol, as pydantic models: what the gateway accepts and what it lists.

Fields follow the order of OpenAI's API reference; vLLM-only sampling fields are fenced below
their comment. Every cap that protects the engine (n, max_tokens, logprobs, stop, messages,
logit_bias) is a Field constraint, so the OpenAPI schema states it and fuzzers can probe it.

Unknown fields are accepted (clients send new OpenAI fields before we know them) but never
forwarded: the upstream body is built only from declared fields. Fields that let a tenant steer
the engine's internals (`chat_template`, `prompt_embeds`, ...) are refused outright.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Caps: OpenAI's own where it has one, otherwise what keeps one request from starving others.
MAX_N = 16
MAX_TOKENS = 32_768
MAX_LOGPROBS = 20
MAX_STOP_SEQUENCES = 16
MAX_STOP_LENGTH = 256
MAX_MESSAGES = 2_048
MAX_LOGIT_BIAS = 300
MAX_TOOLS = 128
MAX_PROMPTS = 64

# Fields a tenant must never set: they run templates or tensors inside the engine.
FORBIDDEN_FIELDS = frozenset(
    {
        "chat_template",
        "chat_template_kwargs",
        "prompt_embeds",
        "mm_processor_kwargs",
        "guided_decoding_backend",
        "logits_processors",
        "kv_transfer_params",
        "vllm_xargs",
        "cache_salt",
    }
)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
StopField = Annotated[
    str
    | Annotated[
        list[Annotated[str, Field(max_length=MAX_STOP_LENGTH)]],
        Field(max_length=MAX_STOP_SEQUENCES),
    ]
    | None,
    Field(description=f"Up to {MAX_STOP_SEQUENCES} sequences where generation stops."),
]


class OpenAIModel(BaseModel):
    """Accepts unknown fields (remembered in `model_extra`) and refuses dangerous ones."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _refuse_engine_internals(cls, data: Any) -> Any:
        if isinstance(data, dict):
            bad = FORBIDDEN_FIELDS.intersection(data)
            if bad:
                raise ValueError(f"field(s) not allowed: {', '.join(sorted(bad))}")
        return data

    def declared_fields(self) -> dict[str, Any]:
        """The fields the client set that this model declares (extras dropped)."""
        return self.model_dump(
            exclude_unset=True, by_alias=True, exclude=set(self.model_extra or ())
        )


class StreamOptions(OpenAIModel):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class ChatMessage(OpenAIModel):
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class JSONSchemaFormat(OpenAIModel):
    name: str = Field(..., max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_json_schema(schema)


class ResponseFormat(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format.type 'json_schema' needs a json_schema object")
        return self


class FunctionDefinition(OpenAIModel):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        return _check_json_schema(schema)


class Tool(OpenAIModel):
    type: Literal["function"]
    function: FunctionDefinition


class _SamplingFields(OpenAIModel):
    """Fields shared by chat and text completions, in OpenAI's order."""

    model: str = Field(..., min_length=1, max_length=256)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        None, max_length=MAX_LOGIT_BIAS
    )
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    n: int | None = Field(None, ge=1, le=MAX_N)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: StopField = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    user: str | None = Field(None, max_length=256)

    # --- vLLM sampling extensions (not in OpenAI's API) ---
    top_k: int | None = Field(None, ge=-1, le=1000)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=2.0)
    min_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS)
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool | None = None

    @property
    def wants_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=MAX_MESSAGES)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _top_logprobs_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        return self


# No vocabulary comes near 2**31; bounding ids keeps floats like 1e30 (which pydantic turns into
# exact ints) out of the engine body, which cannot hold integers past 64 bits.
TokenId = Annotated[int, Field(ge=0, le=2**31 - 1)]
PromptField = (
    Annotated[str, Field(max_length=4_000_000)]
    | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS)]
    | Annotated[list[TokenId], Field(min_length=1)]
    | Annotated[list[list[TokenId]], Field(min_length=1, max_length=MAX_PROMPTS)]
)


class CompletionRequest(_SamplingFields):
    prompt: PromptField
    echo: bool | None = None
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    suffix: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "lorafleet"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def _check_json_schema(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if schema is not None:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise ValueError(f"invalid JSON schema: {exc.message}") from exc
        except RecursionError:  # jsonschema recurses per level; 255 levels exhaust the stack
            raise ValueError("invalid JSON schema: nested too deeply") from None
    return schema
