"""The audit trail: durable spool, SQL shipping, hash chain, queries, verify and purge.

request -> `AuditWriter.submit(event)` -> committer thread (sanitize, chain, group-committed
append to the local spool, fsync) -> shipper task (batched idempotent inserts, in spool order)
-> `audit_events` / `audit_bodies` / `audit_pii`.
"""
