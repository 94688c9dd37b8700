"""`/ui`: server-rendered admin and compliance pages (see `gateway.ui.routes`)."""
