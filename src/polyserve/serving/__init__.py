"""What the HTTP faces share, so the gateway imports neither the engine nor the simulator: the OpenAI request
parsing and response bodies (``openai``, with PolyServe's ``polyserve_slo`` extension), listening sockets
(``net``), child-process helpers (``procs``), prompt token counting and output text (``text``), vLLM's
histogram buckets (``buckets``), and the client side of a streamed call that the gateway (to its backends) and
the benchmark (to the gateway or an engine) both use: ``upstream`` (the ``Upstream`` interface, its failures,
httpx) and ``wire`` (``WireClient``, lean HTTP/1.1 over asyncio sockets)."""
