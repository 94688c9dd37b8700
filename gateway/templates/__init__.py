"""Prompt templates: admin-managed, versioned, labelled, rendered in a Jinja2 sandbox.

- `spec`: the template shape (also `prompts/<name>.yaml`) and variable checks
- `sandbox`: compile and render in `ImmutableSandboxedEnvironment`, bounded
- `versions`: one immutable version, compiled once
- `store`: SQL (versions, labels, change log)
- `registry`: the in-memory view the request path reads; label and canary resolution
- `files`: `prompts_dir` loading and sync
- `stage`: the `/v1` pipeline stage
- `errors`: the error codes
"""
