"""`modelport score`: files of rows scored in-process or streamed to a server."""
