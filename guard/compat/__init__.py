"""Adapters around the few places where Guard depends on another library's non-public behaviour.

Each module fences one such dependency: the rest of Guard calls the adapter, never the private name. The
compatible versions are pinned in pyproject.toml and tests/core/test_compat_contracts.py fails loudly when
an upgrade breaks an assumption (the attribute is gone or behaves differently).

- ssl_chain: the peer's verified/unverified certificate chain (public from Python 3.13).
- uvicorn_protocols: uvicorn's HTTP protocol classes and the connection state Guard's subclasses read.
- presidio_engine: the post-processing steps of Presidio's ``AnalyzerEngine.analyze``, and the suffix
  list its email recognizer reads.
- presidio_import: Presidio imported without transformers/torch, which Guard never uses through it.
- otel_logs: OpenTelemetry's logs API, SDK and OTLP exporter (still under underscore modules).
- torch_fp8: the FP8 matrix multiply and the recompile limits of the local Llama Guard runner.
"""
