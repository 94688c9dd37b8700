"""Telemetry: Prometheus metrics and OpenTelemetry traces."""
