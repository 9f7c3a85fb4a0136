"""The web-host role: WebDB jobs, certificate files, CRL installation, member mails."""
