"""What the HTTP faces share, so the gateway imports neither the engine nor the simulator: the OpenAI request
parsing and response bodies (``openai``, with PolyServe's ``polyserve_slo`` extension), listening sockets
(``net``), child-process helpers (``procs``), prompt token counting and output text (``text``) and vLLM's
histogram buckets (``buckets``)."""
