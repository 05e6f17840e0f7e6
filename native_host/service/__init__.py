"""The service layer: runs the core's decisions against the ports (IMAP, keyring, files)."""
