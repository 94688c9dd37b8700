"""The UI's pages, one module per page group; `gateway.ui.routes` maps them to paths."""
