"""Virtual keys: who is calling (the authenticator) and the shapes keys and teams take."""
