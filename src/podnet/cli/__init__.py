"""The `podnet` command: parse, call the api, render. No logic of its own."""
