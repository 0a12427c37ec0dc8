"""lorafleet: serve fine-tuned Llama-family models behind one OpenAI-compatible gateway.

The repository keeps the folders `server/`, `adapters/` and `benchmarks/` at its top level;
this package maps them into one namespace (`lorafleet.server`, `lorafleet.adapters`,
`lorafleet.benchmarks`) so an installed lorafleet never shadows another distribution's
`server` or `adapters` package.
"""

__version__ = "0.1.0"
