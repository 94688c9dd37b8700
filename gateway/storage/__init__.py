"""SQL storage: tables, engine, repositories, the audit writer. Only here is SQLAlchemy used."""
