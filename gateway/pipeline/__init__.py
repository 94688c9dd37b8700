"""The request pipeline: auth -> policy -> template -> PII -> route -> call -> usage -> audit."""
