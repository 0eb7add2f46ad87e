"""`emailrouter demo` (the `[demo]` extra): an in-process IMAP server and a sink that saves `.eml` files."""
