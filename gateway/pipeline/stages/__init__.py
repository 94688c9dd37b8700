"""The stages of every model request, outermost first (`gateway.pipeline.chain` composes them):

    telemetry       metrics and trace attributes of the outcome
    audit           the one audit event: closed and submitted in `finally`, bodies redacted
    authenticate    the key (401/403 before anything is read)
    limit_headers   x-ratelimit-* on answers refused before the limits stage decided
    parse           the body: size, JSON, routing fields, the protocol's own checks
    audit_gate      503 `audit_unavailable` when no audit record could be made durable
    template        `template` in a body -> messages / prompt, params and model
    access          the model exists and this key, team and policy may use it
    responses       /v1/responses: the response id, hosted tools, previous_response_id
    provider_fields litellm routes take only the fields litellm may see
    limits          per-request caps, reservations in every scope; settled in `finally`
    cost            the one cost of the usage; in `finally`
    pii             input rules before the call; output rules and restore on the answer
    call            route, try, retry, fall back; a stream is pushed to the client here
"""
