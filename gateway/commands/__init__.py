"""CLI command groups; `gateway.cli` registers each one."""
