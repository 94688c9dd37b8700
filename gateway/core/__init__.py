"""The framework-free core: the canonical request every protocol becomes, and stage composition.

Nothing here imports a web framework, SQL or a provider SDK. The API layer (`gateway.api`)
turns an HTTP request into a `RequestContext` and a `Reply` back into bytes; the pipeline
(`gateway.pipeline`) is a chain of stages over it, composed once at start-up.
"""
